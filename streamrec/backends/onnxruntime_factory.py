"""The ``onnxruntime`` backend: an exported graph in ONNX Runtime (`onnxruntime_backend`).

It runs ``engine.engine_file`` when that is an ``.onnx`` file, else the config's export from
the cache in ``engines/`` (for int8, the graph `build-engine --backend onnxruntime` quantized
from it). ``auto`` picks it where TensorRT cannot run and onnxruntime is installed. A streaming
config's engine runs its streaming form's graph (`streamrec.export.export_streaming`), checked
to be of the config's form and hop.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.backends import call_threads, check_streaming, register_backend
from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    from streamrec.backends import Engine
    from streamrec.config import Config


@register_backend("onnxruntime", precisions=("fp32", "fp16", "int8"), auto_rank=1,
                  available=lambda engine: importlib.util.find_spec("onnxruntime") is not None,
                  reads_file=lambda path: path.suffix == ".onnx")
def create(config: Config) -> Engine:
    from streamrec.backends.cpu_int8 import cached_cpu_int8
    from streamrec.backends.engine_cache import cached_export
    from streamrec.backends.inputs import hop_input_specs, input_specs
    from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
    from streamrec.config import streaming_hop_frames
    from streamrec.export import check_metadata

    file = config.engine.engine_file
    if file and Path(file).suffix != ".onnx":
        raise StreamrecError(f"ONNX Runtime reads .onnx files, not {file}; a built TensorRT engine needs "
                             "--backend tensorrt")
    if file:
        path = Path(file)
    elif config.engine.precision == "int8":
        if config.streaming is not None:
            raise StreamrecError("engine.precision=int8 has no streaming form on ONNX Runtime; use fp32 (or drop "
                                 "the streaming: section)")
        path = cached_cpu_int8(config)
    else:
        path = cached_export(config, config.engine.precision)
    hop = streaming_hop_frames(config) if config.streaming is not None else None
    specs = hop_input_specs(config.clip, hop) if hop else input_specs(config.clip)
    engine = OnnxRuntimeEngine(path, specs, config.model.num_classes,
                               device=config.engine.device, threads=call_threads(config.engine),
                               parallel_calls=config.engine.parallel_calls,
                               max_batch=config.pipeline.max_batch, cpu_graph=config.engine.cpu_graph,
                               spin_wait=config.engine.spin_wait)
    check_metadata(engine.metadata, config, path)
    check_streaming(engine, config, path, hop)
    return engine

