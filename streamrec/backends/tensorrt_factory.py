"""The ``tensorrt`` backend: a serialized TensorRT engine on a CUDA GPU (`tensorrt_backend`).

It runs ``engine.engine_file`` when that is a built engine (any file but ``.onnx``), else builds
one from that ``.onnx`` file or from the config's export, into the cache in ``engines/``.
``auto`` picks it first, where TensorRT is installed and a GPU answers.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.backends import parallel_calls_need_cpu, register_backend
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
    from streamrec.backends.engine_cache import BatchProfile, cached_export
    from streamrec.backends.inputs import input_specs
    from streamrec.backends.tensorrt_backend import TensorRTEngine, read_plan
    from streamrec.backends.tensorrt_build import cached_engine
    from streamrec.backends.trt_api import load_tensorrt

    engine = config.engine
    if config.streaming is not None:
        raise StreamrecError("a streaming config (streaming:) runs on the onnxruntime and torch backends; use "
                             "--backend onnxruntime or --backend torch")
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
            raise StreamrecError("engine.precision=int8 needs a quantized graph made from calibration clips: run "
                                 "`run_stream.py build-engine --onnx FILE --precision int8 --calibration DIR` and "
                                 "pass the engine it prints with --engine")
        onnx = file or cached_export(config, engine.precision)
        batch = BatchProfile(1, config.pipeline.max_batch, config.pipeline.max_batch)
        path = cached_engine(onnx, engine.precision, batch, api, memory, progress=log.info, phases=False)
    return TensorRTEngine(read_plan(path, api, memory), api, memory, input_specs(config.clip),
                          config.model.num_classes, source=f"engine {path}", device=f"cuda:{index}")
