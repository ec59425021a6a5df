"""CUDA memory for the TensorRT engine: pinned host buffers, device buffers, a stream, async copies.

pycuda is the design card's choice; where it is not installed (it needs nvcc to build on
some platforms) the same interface is served by cuda-python, which NVIDIA's own TensorRT
samples use since 8.6. Both use the device's primary context, the one TensorRT's runtime
API works in, so device pointers pass between them and TensorRT unchanged.

cuda-python's major version is the CUDA it is built for, linked in statically: cuda-python 13
needs a CUDA 13 driver (580 or newer) and answers every call on an older driver (JetPack 6,
CUDA 12 servers) with ``cudaErrorInsufficientDriver``. That, like every CUDA error, is one line
here naming what to install, never a traceback; and ``auto`` says why it passes TensorRT over.

``tests/gpu/test_gpu_cuda_memory.py`` round-trips data through both implementations on a GPU.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Protocol

import numpy as np

from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)


class Stream(Protocol):
    handle: int  # cudaStream_t as an integer, for ``execute_async_v3``

    def synchronize(self) -> None: ...


class DeviceMemory(Protocol):
    """One GPU, as the TensorRT engine uses it. Every method but `activate` and `close` needs the
    GPU's context current on the calling thread: call it inside ``with memory.activate():``
    (pycuda refuses with "no currently active context?" otherwise)."""

    device_name: str
    compute_capability: str  # "8.7"

    def activate(self) -> ContextManager[None]:
        """Make this GPU's context current on the calling thread (TensorRT calls need it)."""

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array: async copies from and to it overlap with compute."""

    def allocate(self, nbytes: int) -> int:
        """Device memory, freed by `close`; returns its address."""

    def stream(self) -> Stream: ...

    def to_device(self, address: int, host: np.ndarray, stream: Stream) -> None:
        """Queue a copy of contiguous ``host`` to ``address`` on ``stream``; ``host`` is read
        when the copy runs, so keep it unchanged until the stream is synchronized."""

    def to_host(self, host: np.ndarray, address: int, stream: Stream) -> None:
        """Queue a copy from ``address`` into contiguous ``host`` on ``stream``; ``host`` holds
        the data once the stream is synchronized."""

    def close(self) -> None:
        """Free every buffer and stream this object made (it activates the context itself)."""


def open_device(index: int = 0) -> DeviceMemory:
    """GPU ``index`` through pycuda, else cuda-python; what stops either is one clear line."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        pass
    else:
        try:
            return PyCudaMemory(index)
        except getattr(cuda, "Error", RuntimeError) as err:  # pycuda's own errors: no driver, no device
            raise StreamrecError(f"pycuda cannot open CUDA GPU {index}: {first_line(err)}") from None
    try:
        _import_cudart()
    except ImportError:
        raise StreamrecError("the TensorRT backend needs pycuda or cuda-python for GPU memory: "
                             "`pip install -e '.[tensorrt]'` installs cuda-python for CUDA 12 drivers, "
                             "'.[tensorrt-cu13]' for driver 580 or newer (or `pip install pycuda`)") from None
    return CudaPythonMemory(index)


def gpu_count() -> int:
    """GPUs visible through pycuda or cuda-python; 0 when neither is installed or no driver
    answers (a driver too old for the installed cuda-python is logged with the fix)."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        pass
    else:
        try:
            cuda.init()
            return cuda.Device.count()
        except Exception:  # pycuda's own error types: no driver, no device
            return 0
    try:
        cudart = _import_cudart()
    except ImportError:
        return 0
    error, count = cudart.cudaGetDeviceCount()
    if error == cudart.cudaError_t.cudaSuccess:
        return count
    if error == cudart.cudaError_t.cudaErrorInsufficientDriver:
        log.warning("TensorRT cannot use the GPU: %s", insufficient_driver(cudart))
    return 0


def parse_device_index(device: str) -> int:
    """``cuda`` / ``auto`` -> 0, ``cuda:1`` -> 1."""
    _, _, index = device.partition(":")
    if index and not index.isdigit():
        raise StreamrecError(f"engine.device '{device}' must be cuda or cuda:N")
    return int(index or 0)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------- pycuda


class PyCudaMemory:
    def __init__(self, index: int):
        import pycuda.driver as cuda

        cuda.init()
        if index >= cuda.Device.count():
            raise StreamrecError(f"no CUDA GPU {index}: pycuda sees {cuda.Device.count()}")
        self._cuda = cuda
        device = cuda.Device(index)
        self.device_name = device.name()
        self.compute_capability = "{}.{}".format(*device.compute_capability())
        self._context = device.retain_primary_context()
        self._allocations: list[Any] = []  # pycuda frees a DeviceAllocation when it is collected

    @contextmanager
    def activate(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._cuda.pagelocked_empty(shape, dtype)

    def allocate(self, nbytes: int) -> int:
        allocation = self._cuda.mem_alloc(nbytes)
        self._allocations.append(allocation)
        return int(allocation)

    def stream(self) -> Stream:
        return self._cuda.Stream()  # has .handle and .synchronize()

    def to_device(self, address: int, host: np.ndarray, stream: Stream) -> None:
        self._cuda.memcpy_htod_async(address, host, stream)

    def to_host(self, host: np.ndarray, address: int, stream: Stream) -> None:
        self._cuda.memcpy_dtoh_async(host, address, stream)

    def close(self) -> None:
        with self.activate():
            for allocation in self._allocations:
                allocation.free()
        self._allocations.clear()


# --------------------------------------------------------------------------- cuda-python


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6; the only path in 13
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python (the 8.6-10.x TensorRT samples' import)
    return runtime


def _native_handle_getter() -> Callable[[Any], int]:
    """cuda-python's way to read a handle as an int: ``get_cuda_native_handle`` (12.9.1 and 13),
    for which ``int(handle)`` is deprecated; ``int`` on the versions before it."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int
    return get_cuda_native_handle


def cuda_python_version() -> str:
    for distribution in ("cuda-bindings", "cuda-python"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def insufficient_driver(cudart: Any) -> str:
    """What ``cudaErrorInsufficientDriver`` means here, and the install that fixes it."""
    installed = cuda_python_version()
    error, version = cudart.cudaDriverGetVersion()
    if error != cudart.cudaError_t.cudaSuccess or not version:
        return (f"cuda-python {installed} finds no NVIDIA driver new enough for it; install the driver, or the "
                "cuda-python of the driver's CUDA version")
    major, minor = version // 1000, version % 1000 // 10
    return (f"cuda-python {installed} needs a newer NVIDIA driver than this one, which runs CUDA {major}.{minor}: "
            f"`pip install 'cuda-python>={major},<{major + 1}'` (for CUDA 12: `pip install -e '.[tensorrt]'`), "
            "or update the driver")


class _CudaPythonStream:
    def __init__(self, memory: "CudaPythonMemory", stream: Any):
        self._memory = memory
        self.stream = stream  # cuda-python's cudaStream_t, which owns the handle
        self.handle = memory.native_handle(stream)

    def synchronize(self) -> None:
        self._memory.call("cudaStreamSynchronize", self.stream)


class CudaPythonMemory:
    def __init__(self, index: int):
        self.cudart = _import_cudart()
        self.native_handle = _native_handle_getter()
        self.index = index
        count = self.call("cudaGetDeviceCount")
        if index >= count:
            raise StreamrecError(f"no CUDA GPU {index}: cuda-python sees {count}")
        self.call("cudaSetDevice", index)
        properties = self.call("cudaGetDeviceProperties", index)
        name = properties.name
        self.device_name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")
        self.compute_capability = f"{properties.major}.{properties.minor}"
        self._host: list[int] = []
        self._device: list[int] = []
        self._streams: list[_CudaPythonStream] = []

    def call(self, function: str, *args: Any) -> Any:
        """``cudart.<function>(*args)``, which returns ``(error, *values)``: the value(s), or one
        clear line for the error."""
        error, *values = getattr(self.cudart, function)(*args)
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise StreamrecError(self.describe(function, error))
        return values[0] if len(values) == 1 else tuple(values) or None

    def describe(self, function: str, error: Any) -> str:
        if error == self.cudart.cudaError_t.cudaErrorInsufficientDriver:
            return f"CUDA cannot start ({function}): {insufficient_driver(self.cudart)}"
        _, name = self.cudart.cudaGetErrorName(error)
        _, text = self.cudart.cudaGetErrorString(error)
        return (f"CUDA error {name.decode(errors='replace')} ({int(error)}) in {function} on GPU {self.index}: "
                f"{text.decode(errors='replace')}")

    @contextmanager
    def activate(self) -> Iterator[None]:
        self.call("cudaSetDevice", self.index)  # binds the device's primary context to this thread
        yield

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        nbytes = max(1, count * np.dtype(dtype).itemsize)
        address = int(self.call("cudaMallocHost", nbytes))  # a plain pointer value, not a handle type
        self._host.append(address)
        raw = (ctypes.c_uint8 * nbytes).from_address(address)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def allocate(self, nbytes: int) -> int:
        address = int(self.call("cudaMalloc", nbytes))
        self._device.append(address)
        return address

    def stream(self) -> Stream:
        stream = _CudaPythonStream(self, self.call("cudaStreamCreate"))
        self._streams.append(stream)
        return stream

    def to_device(self, address: int, host: np.ndarray, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", address, host.ctypes.data, host.nbytes, kind, stream.stream)

    def to_host(self, host: np.ndarray, address: int, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", host.ctypes.data, address, host.nbytes, kind, stream.stream)

    def close(self) -> None:
        with self.activate():
            for stream in self._streams:
                self.call("cudaStreamDestroy", stream.stream)
            for address in self._device:
                self.call("cudaFree", address)
            for address in self._host:
                self.call("cudaFreeHost", address)
        self._streams.clear()
        self._device.clear()
        self._host.clear()
