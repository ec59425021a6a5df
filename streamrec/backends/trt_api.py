"""Every call streamrec makes into TensorRT, behind one small typed interface.

This is the only module that imports ``tensorrt``. The engine and build logic
(`streamrec.backends.tensorrt_backend`, `streamrec.backends.tensorrt_build`) take a `TensorRT`
object: the real one from `load_tensorrt()`, or in the tests a stand-in that implements the
same protocols, so cache keys, shape handling, buffer sizing and error paths are tested
without a GPU. The protocols list exactly the members used; `CudaEngine` and
`ExecutionContext` are TensorRT's own objects, unwrapped.

Written against the TensorRT Python API of 10.3 (JetPack 6) through 11.x: strongly typed
networks (``STRONGLY_TYPED``; 11.x makes every network strongly typed and accepts the flag),
no precision builder flags (removed in 11.x), the name-based I/O tensor API
(``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``), nothing of the bindings API removed in 10.0.

NEVER RUN ON REAL TENSORRT: TensorRT cannot be installed on the machines this project is
built and tested on, so `RealTensorRT` has only been read against NVIDIA's documentation and
samples. Until it has run on a GPU, treat a TensorRT failure as possibly a bug here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from streamrec.errors import StreamrecError

Shape = tuple[int, ...]


class ExecutionContext(Protocol):
    """``tensorrt.IExecutionContext``: the members used."""

    def set_input_shape(self, name: str, shape: Shape) -> bool: ...

    def get_tensor_shape(self, name: str) -> Sequence[int]: ...

    def set_tensor_address(self, name: str, memory: int) -> bool: ...

    def execute_async_v3(self, stream_handle: int) -> bool: ...


class CudaEngine(Protocol):
    """``tensorrt.ICudaEngine``: the members used."""

    @property
    def num_io_tensors(self) -> int: ...

    def get_tensor_name(self, index: int) -> str: ...

    def get_tensor_mode(self, name: str) -> Any: ...  # tensorrt.TensorIOMode; see TensorRT.is_input

    def get_tensor_dtype(self, name: str) -> Any: ...  # tensorrt.DataType; see TensorRT.numpy_dtype

    def get_tensor_shape(self, name: str) -> Sequence[int]: ...  # -1 on dynamic axes

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> Sequence[Sequence[int]]: ...  # min, opt, max

    def create_execution_context(self) -> ExecutionContext: ...


@dataclass(frozen=True)
class ParserIssue:
    """One ``OnnxParser`` error, with the ONNX node it is about."""

    node_name: str
    node_operator: str
    description: str


class OnnxParseError(Exception):
    def __init__(self, issues: list[ParserIssue]):
        super().__init__("; ".join(i.description for i in issues))
        self.issues = issues


class TensorRTError(Exception):
    """TensorRT refused (a build or a deserialisation); ``messages`` are the errors it logged."""

    def __init__(self, messages: list[str]):
        super().__init__(messages[-1] if messages else "no message from TensorRT")
        self.messages = messages


ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


@dataclass(frozen=True)
class BuildResult:
    plan: bytes
    timing_cache: bytes


class TensorRT(Protocol):
    """What streamrec needs from the TensorRT library."""

    version: str

    def deserialize(self, plan: bytes) -> CudaEngine:
        """The engine in ``plan``; raises `TensorRTError` if TensorRT refuses it."""

    def is_input(self, mode: Any) -> bool: ...

    def numpy_dtype(self, dtype: Any) -> np.dtype: ...

    def build(self, onnx: bytes, profile: Callable[[str, Shape], tuple[Shape, Shape, Shape]],
              workspace_bytes: int | None, timing_cache: bytes | None,
              progress: Callable[[str], None]) -> BuildResult:
        """Parse ``onnx`` into a strongly typed network and build a serialized engine.

        ``profile(name, shape)`` gives each input's (min, opt, max) shapes for the one
        optimization profile, from its ONNX shape (-1 on dynamic axes). Raises `OnnxParseError`
        or `TensorRTError`.
        """


def load_tensorrt() -> TensorRT:
    """The installed TensorRT; a missing install is one clear line."""
    try:
        import tensorrt
    except ImportError:
        raise StreamrecError(
            "engine.backend=tensorrt but TensorRT is not installed: on a Jetson it comes with JetPack "
            "(python3-libnvinfer), elsewhere `pip install tensorrt`; or use --backend onnxruntime"
        ) from None
    return RealTensorRT(tensorrt)


class RealTensorRT:
    """`TensorRT` over the ``tensorrt`` module (see the module docstring: never run here)."""

    def __init__(self, trt: Any):
        self.trt = trt
        self.version = trt.__version__
        self.logger = _recording_logger(trt)
        self.runtime = trt.Runtime(self.logger)

    def deserialize(self, plan: bytes) -> CudaEngine:
        self.logger.errors.clear()
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise TensorRTError(list(self.logger.errors))
        return engine

    def is_input(self, mode: Any) -> bool:
        return mode == self.trt.TensorIOMode.INPUT

    def numpy_dtype(self, dtype: Any) -> np.dtype:
        return np.dtype(self.trt.nptype(dtype))

    def build(self, onnx: bytes, profile: Callable[[str, Shape], tuple[Shape, Shape, Shape]],
              workspace_bytes: int | None, timing_cache: bytes | None,
              progress: Callable[[str], None]) -> BuildResult:
        trt = self.trt
        self.logger.errors.clear()
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx):
            issues = []
            for index in range(parser.num_errors):
                error = parser.get_error(index)
                issues.append(ParserIssue(error.node_name(), error.node_operator(), error.desc()))
            raise OnnxParseError(issues)

        config = builder.create_builder_config()
        if workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        optimization_profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            low, opt, high = profile(tensor.name, tuple(tensor.shape))
            optimization_profile.set_shape(tensor.name, low, opt, high)
        config.add_optimization_profile(optimization_profile)
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another GPU is not used
        monitor = _progress_monitor(trt, progress)
        config.progress_monitor = monitor  # kept alive by `monitor` until the build returns

        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TensorRTError(list(self.logger.errors))
        return BuildResult(bytes(plan), bytes(config.get_timing_cache().serialize()))


def _recording_logger(trt: Any) -> Any:
    """A ``tensorrt.ILogger`` that prints warnings and keeps the errors, for one-line messages."""

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                print(f"TensorRT warning: {msg}", flush=True)

    return RecordingLogger()


def _progress_monitor(trt: Any, progress: Callable[[str], None]) -> Any:
    """A ``tensorrt.IProgressMonitor`` reporting the top-level build phases and their steps."""

    class ProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.lock = threading.Lock()  # TensorRT may call from several threads
            self.top_level: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                with self.lock:
                    self.top_level[phase_name] = num_steps
                progress(f"{phase_name} ...")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self.lock:
                steps = self.top_level.get(phase_name)
            if steps and steps > 1:
                progress(f"{phase_name}: step {step + 1}/{steps}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self.lock:
                self.top_level.pop(phase_name, None)

    return ProgressMonitor()
