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

Messages: TensorRT's own ``Logger`` filters by severity in C++ and prints warnings and errors;
a Python ``ILogger`` would take the GIL for every VERBOSE line from the builder's threads.
Errors reach Python only through an ``IErrorRecorder`` (TensorRT sends errors there instead
of the log once one is set), which logs each one as it comes and keeps the latest few for the
one-line message of the call that failed.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)
Shape = tuple[int, ...]
KEPT_ERRORS = 16  # the latest TensorRT errors kept for a message; all of them are logged as they come


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
    """TensorRT refused (a build or a deserialisation); ``messages`` are the errors it reported."""

    def __init__(self, messages: list[str]):
        super().__init__(messages[-1] if messages else "no message from TensorRT")
        self.messages = messages


ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


@dataclass(frozen=True)
class BuildResult:
    plan: bytes
    timing_cache: bytes | None  # None: TensorRT kept no timing cache for this build


class TensorRT(Protocol):
    """What streamrec needs from the TensorRT library."""

    version: str

    def deserialize(self, plan: bytes) -> CudaEngine:
        """The engine in ``plan``; raises `TensorRTError` if TensorRT refuses it."""

    def is_input(self, mode: Any) -> bool: ...

    def numpy_dtype(self, dtype: Any) -> np.dtype | None:
        """The numpy type of a tensor type; None where numpy has none (BF16, FP8, INT4, FP4)."""

    def take_errors(self) -> list[str]:
        """The errors TensorRT reported since the last call (each was logged when it came)."""

    def layer_types(self, engine: CudaEngine) -> collections.Counter:
        """How many layer inputs and outputs of each type the built engine has ("Half", "Float",
        "Int8", ...), from TensorRT's engine inspector."""

    def build(self, onnx: bytes, profile: Callable[[str, Shape], tuple[Shape, Shape, Shape]],
              workspace_bytes: int | None, timing_cache: bytes | None,
              progress: Callable[[str], None] | None, *, tf32: bool) -> BuildResult:
        """Parse ``onnx`` into a strongly typed network and build a serialized engine.

        ``profile(name, shape)`` gives each input's (min, opt, max) shapes for the one
        optimization profile, from its ONNX shape (-1 on dynamic axes). ``progress`` receives
        the build phases (None: no progress monitor, the quickest build). ``tf32`` lets float32
        layers round their inputs to TF32 (TensorRT's default; off keeps float32 exact).
        Raises `OnnxParseError` or `TensorRTError`.
        """


def load_tensorrt() -> TensorRT:
    """The installed TensorRT; a missing install is one clear line."""
    try:
        import tensorrt
    except ImportError:
        raise StreamrecError(
            "engine.backend=tensorrt but TensorRT is not installed: on a Jetson it comes with JetPack "
            "(python3-libnvinfer), elsewhere `pip install -e '.[tensorrt]'` (CUDA 12 drivers) or "
            "'.[tensorrt-cu13]' (driver 580 or newer); or use --backend onnxruntime"
        ) from None
    return RealTensorRT(tensorrt)


class RealTensorRT:
    """`TensorRT` over the ``tensorrt`` module."""

    def __init__(self, trt: Any):
        self.trt = trt
        self.version = trt.__version__
        self.logger = trt.Logger(trt.Logger.WARNING)  # filters in C++: INFO and VERBOSE never reach Python
        # NVIDIA's plugin library: the ONNX parser imports RoiAlign (the per-person heads) as its
        # ROIAlign_TRT plugin, and an engine holding one deserializes only once it is registered.
        if not trt.init_libnvinfer_plugins(self.logger, ""):
            log.warning("TensorRT could not register NVIDIA's plugin library: engines with per-person "
                        "heads (ROIAlign_TRT) will not load")
        self.errors = _error_recorder(trt)
        self.runtime = trt.Runtime(self.logger)
        self.runtime.error_recorder = self.errors  # engines and their contexts inherit it

    def deserialize(self, plan: bytes) -> CudaEngine:
        self.errors.take()
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise TensorRTError(self.errors.take())
        return engine

    def is_input(self, mode: Any) -> bool:
        return mode == self.trt.TensorIOMode.INPUT

    def numpy_dtype(self, dtype: Any) -> np.dtype | None:
        try:
            return np.dtype(self.trt.nptype(dtype))
        except TypeError:  # trt.nptype's answer for the types numpy lacks
            return None

    def take_errors(self) -> list[str]:
        return self.errors.take()

    def layer_types(self, engine: CudaEngine) -> collections.Counter:
        trt = self.trt
        inspector = engine.create_engine_inspector()
        information = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        counts: collections.Counter = collections.Counter()
        for layer in information.get("Layers", []):
            if isinstance(layer, dict):  # a plain name where the engine was built without DETAILED verbosity
                for tensor in [*layer.get("Inputs", []), *layer.get("Outputs", [])]:
                    counts[_tensor_type(tensor)] += 1
        return counts

    def build(self, onnx: bytes, profile: Callable[[str, Shape], tuple[Shape, Shape, Shape]],
              workspace_bytes: int | None, timing_cache: bytes | None,
              progress: Callable[[str], None] | None, *, tf32: bool) -> BuildResult:
        trt = self.trt
        self.errors.take()
        builder = trt.Builder(self.logger)
        builder.error_recorder = self.errors  # the network, parser and config it makes inherit it
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
        if not tf32:
            config.clear_flag(trt.BuilderFlag.TF32)  # set by default: float32 layers would round to TF32
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer types for `layer_types`
        optimization_profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            low, opt, high = profile(tensor.name, tuple(tensor.shape))
            optimization_profile.set_shape(tensor.name, low, opt, high)
        config.add_optimization_profile(optimization_profile)
        cache = _attach_timing_cache(config, timing_cache)  # kept alive until the build returns
        monitor = _progress_monitor(trt, progress) if progress is not None else None
        if monitor is not None:
            config.progress_monitor = monitor  # kept alive by `monitor` until the build returns

        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TensorRTError(self.errors.take())
        used = config.get_timing_cache()  # None if TensorRT kept none
        del cache, monitor  # both had to outlive the build
        return BuildResult(bytes(plan), bytes(used.serialize()) if used is not None else None)


def _tensor_type(tensor: dict) -> str:
    """A layer tensor's format and type as the engine inspector's JSON gives them: one key
    ``Format/Datatype`` in TensorRT 10, which 11 changed the schema of (NVIDIA's "Migrating
    IEngineInspector Usage" page); separate ``Format`` and ``Datatype`` keys are read too."""
    if "Format/Datatype" in tensor:
        return str(tensor["Format/Datatype"])
    parts = [str(tensor[key]) for key in ("Format", "Datatype") if key in tensor]
    return " ".join(parts) or "N/A"


def _attach_timing_cache(config: Any, timing_cache: bytes | None) -> Any:
    """Give the build the saved timing cache, or a fresh one where TensorRT refuses the saved one
    (``set_timing_cache`` returns False for a cache from another GPU; ``ignore_mismatch`` stays
    False so such timings are never used). A saved cache TensorRT cannot read at all (its
    ``create_timing_cache`` gives None, or raises) is refused the same way."""
    try:
        cache = config.create_timing_cache(timing_cache or b"")
    except Exception:  # noqa: BLE001 - TensorRT's binding raises its own types for a blob it cannot read
        cache = None
    if cache is not None and config.set_timing_cache(cache, False):
        return cache
    log.warning("TensorRT refused the saved timing cache (damaged, or made on another GPU or TensorRT); "
                "building with a new one, which replaces it")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("TensorRT refused an empty timing cache too; building without one")
    return cache


def _error_recorder(trt: Any) -> Any:
    """A ``tensorrt.IErrorRecorder`` that logs every error and keeps the latest `KEPT_ERRORS`.

    TensorRT calls it from its own threads, so it locks; ``report_error`` returns False to let
    TensorRT decide whether the error ends the call. The method names are those TensorRT's
    Python trampoline dispatches to (``get_num_errors``, not the ``num_errors`` binding).
    """

    class ErrorRecorder(trt.IErrorRecorder):
        def __init__(self) -> None:
            trt.IErrorRecorder.__init__(self)
            self.lock = threading.Lock()
            self.kept: collections.deque[tuple[Any, str]] = collections.deque(maxlen=KEPT_ERRORS)
            self.overflowed = False

        def report_error(self, code: Any, description: str) -> bool:
            name = getattr(code, "name", str(code))
            log.error("TensorRT error (%s): %s", name, description)
            with self.lock:
                self.overflowed |= len(self.kept) == KEPT_ERRORS
                self.kept.append((code, str(description)))
            return False

        def get_num_errors(self) -> int:
            with self.lock:
                return len(self.kept)

        def get_error_code(self, index: int) -> Any:
            with self.lock:
                return self.kept[index][0]

        def get_error_desc(self, index: int) -> str:
            with self.lock:
                return self.kept[index][1]

        def has_overflowed(self) -> bool:
            return self.overflowed

        def clear(self) -> None:
            with self.lock:
                self.kept.clear()
                self.overflowed = False

        def take(self) -> list[str]:
            """The kept descriptions, oldest first, and a clean slate for the next call."""
            with self.lock:
                messages = [description for _, description in self.kept]
                self.kept.clear()
                self.overflowed = False
            return messages

    return ErrorRecorder()


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
