"""Engines: the one seam between CPU-side code and the accelerator.

Every backend serves the same contract: ``infer(inputs)`` takes uint8 RGB arrays keyed by
the clip's input names (``slow`` ``[B, Ts, H, W, 3]`` and ``fast`` ``[B, Tf, H, W, 3]``, or
``frames`` for single-pathway models) and returns float32 logits ``[B, num_classes]``.
Normalisation happens inside the engine.

`create_engine` is where a config becomes an engine: it picks the backend (``auto``: TensorRT
where it is installed and a GPU is present, else ONNX Runtime, else PyTorch), takes
``engine.engine_file`` if given, and otherwise exports and builds into ``engines/``, reusing
what an earlier run made there. The ONNX Runtime and TensorRT paths import torch only to
export a missing ONNX file.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from streamrec.config import Config, EngineConfig
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)
PRECISIONS = {"torch": ("fp32", "fp16", "bf16"), "onnxruntime": ("fp32", "fp16", "int8"),
              "tensorrt": ("fp32", "fp16", "int8")}


class Engine(Protocol):
    name: str  # backend name, for logs and benchmark tables
    max_batch: int  # largest batch one infer() call accepts
    parallel_calls: int  # infer() calls it runs at once, from as many threads (engine.parallel_calls)
    device: str  # where it computes: "cpu", "cuda:0", ...

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


class EngineWrapper:
    """An engine around another one (to meter, alter or fail its calls): it forwards what
    describes the engine, so a subclass overrides only ``infer`` (or a class attribute such as
    ``name``) and never copies the rest by hand."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def max_batch(self) -> int:
        return self.engine.max_batch

    @property
    def parallel_calls(self) -> int:
        return self.engine.parallel_calls

    @property
    def device(self) -> str:
        return self.engine.device

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.engine.infer(inputs)


def call_threads(engine: EngineConfig) -> int:
    """CPU threads for each engine call: ``engine.threads`` when set; with parallel calls, the
    process's cores shared out between them; else 0, the library's default (every core)."""
    if engine.threads or engine.parallel_calls == 1:
        return engine.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // engine.parallel_calls)


def parallel_calls_need_cpu(engine: str) -> StreamrecError:
    """The error for ``engine.parallel_calls`` > 1 on an engine that computes on a GPU."""
    return StreamrecError(f"engine.parallel_calls > 1 is for engines on the CPU, and this {engine} engine runs on a "
                          "GPU, where a larger pipeline.max_batch keeps it busy instead; set engine.parallel_calls: 1")


def resolve_backend(config: Config) -> str:
    """The backend ``engine.backend`` names; for ``auto``, the fastest one this machine can run."""
    engine = config.engine
    if engine.backend != "auto":
        return engine.backend
    if engine.engine_file:  # the file says which runtime reads it
        return "onnxruntime" if Path(engine.engine_file).suffix == ".onnx" else "tensorrt"
    if engine.device != "cpu" and tensorrt_usable():
        return "tensorrt"
    if importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime"
    return "torch"


def tensorrt_usable() -> bool:
    """TensorRT is installed and a CUDA GPU answers (through pycuda or cuda-python)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from streamrec.backends.cuda_memory import gpu_count

    return gpu_count() > 0


def create_engine(config: Config) -> Engine:
    """The engine a config asks for, from ``engine.engine_file`` or the cache in ``engines/``."""
    backend = resolve_backend(config)
    engine = config.engine
    if engine.engine_file is None and engine.precision not in PRECISIONS[backend]:
        raise StreamrecError(f"engine.precision={engine.precision} is not available with the {backend} backend; "
                             f"it runs {', '.join(PRECISIONS[backend])}")
    log.info("engine backend: %s%s", backend, " (auto)" if engine.backend == "auto" else "")
    if backend == "torch":
        if engine.engine_file:
            raise StreamrecError("engine.engine_file is for onnxruntime and tensorrt; the torch backend runs the "
                                 "config's model and checkpoint")
        from streamrec.backends.torch_backend import TorchEngine

        return TorchEngine.from_config(config)
    if backend == "onnxruntime":
        return _onnxruntime_engine(config)
    return _tensorrt_engine(config)


def _onnxruntime_engine(config: Config) -> Engine:
    from streamrec.backends.cpu_int8 import cached_cpu_int8
    from streamrec.backends.engine_cache import cached_export
    from streamrec.backends.inputs import input_specs
    from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
    from streamrec.export import check_metadata

    file = config.engine.engine_file
    if file and Path(file).suffix != ".onnx":
        raise StreamrecError(f"ONNX Runtime reads .onnx files, not {file}; a built TensorRT engine needs "
                             "--backend tensorrt")
    if file:
        path = Path(file)
    elif config.engine.precision == "int8":
        path = cached_cpu_int8(config)
    else:
        path = cached_export(config, config.engine.precision)
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), config.model.num_classes,
                               device=config.engine.device, threads=call_threads(config.engine),
                               parallel_calls=config.engine.parallel_calls,
                               max_batch=config.pipeline.max_batch, cpu_graph=config.engine.cpu_graph)
    check_metadata(engine.metadata, config, path)
    return engine


def _tensorrt_engine(config: Config) -> Engine:
    from streamrec.backends.cuda_memory import open_device, parse_device_index
    from streamrec.backends.engine_cache import BatchProfile, cached_export
    from streamrec.backends.inputs import input_specs
    from streamrec.backends.tensorrt_backend import TensorRTEngine, read_plan
    from streamrec.backends.tensorrt_build import cached_engine
    from streamrec.backends.trt_api import load_tensorrt

    engine = config.engine
    if engine.device == "cpu":
        raise StreamrecError("the tensorrt backend runs on a CUDA GPU; engine.device=cpu needs --backend "
                             "onnxruntime or torch")
    if engine.parallel_calls > 1:
        raise parallel_calls_need_cpu("tensorrt")
    api = load_tensorrt()
    memory = open_device(parse_device_index(engine.device))
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
        path = cached_engine(onnx, engine.precision, batch, api, memory, progress=log.info)
    return TensorRTEngine(read_plan(path, api, memory), api, memory, input_specs(config.clip),
                          config.model.num_classes, source=f"engine {path}")
