"""The ``tensorrt`` backend: a serialized TensorRT engine on a CUDA GPU (`tensorrt_backend`).

It runs ``engine.engine_file`` when that is a built engine (any file but ``.onnx``), else builds
one from that ``.onnx`` file or from the config's export, into the cache in ``engines/``.
``auto`` picks it first, where TensorRT is installed and a GPU answers. A streaming config's
engine is built from its streaming form's graph (`streamrec.export.export_streaming`); as for
ONNX Runtime, the engine is checked against the config by its graph's metadata, kept in the
engine's record.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.backends import check_streaming, parallel_calls_need_cpu, register_backend
from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    from streamrec.backends import Engine
    from streamrec.config import Config, EngineConfig

log = logging.getLogger(__name__)


def tensorrt_usable() -> bool:
    """TensorRT is installed and a CUDA GPU answers (through pycuda or cuda-python)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from streamrec.backends.cuda_memory import gpu_count

    return gpu_count() > 0


def runs_here(engine: EngineConfig) -> bool:
    """What ``auto`` asks: a GPU engine is wanted or allowed, and TensorRT can run one."""
    return engine.device != "cpu" and tensorrt_usable()


@register_backend("tensorrt", precisions=("fp32", "fp16", "int8"), auto_rank=0,
                  available=runs_here,
                  reads_file=lambda path: path.suffix != ".onnx")
def create(config: Config) -> Engine:
    from streamrec.backends.cuda_memory import open_device, parse_device_index
    from streamrec.backends.engine_cache import BatchProfile, EngineRecord, cached_export
    from streamrec.backends.inputs import hop_input_specs, input_specs
    from streamrec.backends.tensorrt_backend import TensorRTEngine, read_plan
    from streamrec.backends.tensorrt_build import cached_engine
    from streamrec.backends.trt_api import load_tensorrt
    from streamrec.config import streaming_hop_frames
    from streamrec.export import check_metadata

    engine = config.engine
    hop = streaming_hop_frames(config) if config.streaming is not None else None
    if engine.device == "cpu":
        raise StreamrecError("the tensorrt backend runs on a CUDA GPU; engine.device=cpu needs --backend "
                             "onnxruntime or torch")
    if engine.parallel_calls > 1:
        raise parallel_calls_need_cpu("tensorrt")
    api = load_tensorrt()
    index = parse_device_index(engine.device)
    memory = open_device(index)
    file = Path(engine.engine_file) if engine.engine_file else None
    if file is not None and file.suffix != ".onnx":
        path = file
    else:
        if file is None and engine.precision == "int8":
            if hop is not None:
                raise StreamrecError("engine.precision=int8 has no streaming form (its calibration runs whole "
                                     "clips); use fp32 or fp16 (or drop the streaming: section)")
            raise StreamrecError("engine.precision=int8 needs a quantized graph made from calibration clips: run "
                                 "`run_stream.py build-engine --onnx FILE --precision int8 --calibration DIR` and "
                                 "pass the engine it prints with --engine")
        onnx = file or cached_export(config, engine.precision)
        batch = BatchProfile(1, config.pipeline.max_batch, config.pipeline.max_batch)
        path = cached_engine(onnx, engine.precision, batch, api, memory, progress=log.info, phases=False)
    record = EngineRecord.load(path)
    metadata = record.metadata if record else None
    specs = hop_input_specs(config.clip, hop) if hop else input_specs(config.clip)
    check_metadata(metadata, config, path)
    made = TensorRTEngine(read_plan(path, api, memory, record), api, memory, specs, config.model.num_classes,
                          source=f"engine {path}", device=f"cuda:{index}", metadata=metadata)
    try:
        check_streaming(made, config, path, hop)
    except StreamrecError:
        made.close()
        raise
    return made
