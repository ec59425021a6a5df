"""CUDA memory for the TensorRT engine: pinned host buffers, device buffers, a stream, async copies.

pycuda is the design card's choice; where it is not installed (it needs nvcc to build on
some platforms) the same interface is served by cuda-python, which NVIDIA's own TensorRT
samples use since 8.6. Both use the device's primary context, the one TensorRT's runtime
API works in, so device pointers pass between them and TensorRT unchanged.

``tests/gpu/test_gpu_cuda_memory.py`` round-trips data through both implementations; it needs
a CUDA GPU and is skipped without one.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from typing import Any, ContextManager, Iterator, Protocol

import numpy as np

from streamrec.errors import StreamrecError


class Stream(Protocol):
    handle: int  # cudaStream_t as an integer, for ``execute_async_v3``

    def synchronize(self) -> None: ...


class DeviceMemory(Protocol):
    """One GPU, as the TensorRT engine uses it."""

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
        """Queue a copy of contiguous ``host`` to ``address`` on ``stream``."""

    def to_host(self, host: np.ndarray, address: int, stream: Stream) -> None:
        """Queue a copy from ``address`` into contiguous ``host`` on ``stream``."""

    def close(self) -> None: ...


def open_device(index: int = 0) -> DeviceMemory:
    """GPU ``index`` through pycuda, else cuda-python; neither installed is one clear line."""
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        pass
    else:
        return PyCudaMemory(index)
    try:
        _import_cudart()
    except ImportError:
        raise StreamrecError("the TensorRT backend needs pycuda or cuda-python for GPU memory: "
                             "`pip install cuda-python` (or pycuda)") from None
    return CudaPythonMemory(index)


def gpu_count() -> int:
    """GPUs visible through pycuda or cuda-python; 0 when neither is installed or no driver answers."""
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
    return count if error == cudart.cudaError_t.cudaSuccess else 0


def parse_device_index(device: str) -> int:
    """``cuda`` / ``auto`` -> 0, ``cuda:1`` -> 1."""
    _, _, index = device.partition(":")
    if index and not index.isdigit():
        raise StreamrecError(f"engine.device '{device}' must be cuda or cuda:N")
    return int(index or 0)


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
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python (the 8.6-10.x TensorRT samples' import)
    return runtime


class _CudaPythonStream:
    def __init__(self, memory: "CudaPythonMemory", stream: Any):
        self._memory = memory
        self.handle = int(stream)  # cuda-python's functions take the handle as an int too

    def synchronize(self) -> None:
        self._memory.check(self._memory.cudart.cudaStreamSynchronize(self.handle))


class CudaPythonMemory:
    def __init__(self, index: int):
        self.cudart = _import_cudart()
        self.index = index
        count = self.check(self.cudart.cudaGetDeviceCount())
        if index >= count:
            raise StreamrecError(f"no CUDA GPU {index}: cuda-python sees {count}")
        self.check(self.cudart.cudaSetDevice(index))
        properties = self.check(self.cudart.cudaGetDeviceProperties(index))
        name = properties.name
        self.device_name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")
        self.compute_capability = f"{properties.major}.{properties.minor}"
        self._host: list[int] = []
        self._device: list[int] = []
        self._streams: list[_CudaPythonStream] = []

    def check(self, result: tuple) -> Any:
        """cuda-python returns ``(error, *values)``; raise on an error, return the value(s)."""
        error, *values = result
        if error != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(error)
            raise RuntimeError(f"CUDA error {int(error)}: {text.decode(errors='replace')}")
        return values[0] if len(values) == 1 else tuple(values) or None

    @contextmanager
    def activate(self) -> Iterator[None]:
        self.check(self.cudart.cudaSetDevice(self.index))  # binds the device's primary context to this thread
        yield

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        nbytes = max(1, count * np.dtype(dtype).itemsize)
        address = self.check(self.cudart.cudaMallocHost(nbytes))
        self._host.append(address)
        raw = (ctypes.c_uint8 * nbytes).from_address(address)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def allocate(self, nbytes: int) -> int:
        address = int(self.check(self.cudart.cudaMalloc(nbytes)))
        self._device.append(address)
        return address

    def stream(self) -> Stream:
        stream = _CudaPythonStream(self, self.check(self.cudart.cudaStreamCreate()))
        self._streams.append(stream)
        return stream

    def to_device(self, address: int, host: np.ndarray, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.cudart.cudaMemcpyAsync(address, host.ctypes.data, host.nbytes, kind, stream.handle))

    def to_host(self, host: np.ndarray, address: int, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.cudart.cudaMemcpyAsync(host.ctypes.data, address, host.nbytes, kind, stream.handle))

    def close(self) -> None:
        with self.activate():
            for stream in self._streams:
                self.check(self.cudart.cudaStreamDestroy(stream.handle))
            for address in self._device:
                self.check(self.cudart.cudaFree(address))
            for address in self._host:
                self.check(self.cudart.cudaFreeHost(address))
        self._streams.clear()
        self._device.clear()
        self._host.clear()
