"""On a CUDA GPU: both `DeviceMemory` implementations move real bytes (skipped without one).

Run on a GPU machine with ``pip install cuda-python`` and/or ``pip install pycuda`` (pycuda
may need building from its sdist with nvcc on the PATH):

    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from streamrec.backends.cuda_memory import CudaPythonMemory, PyCudaMemory, gpu_count

IMPLEMENTATIONS = []
if importlib.util.find_spec("pycuda") is not None:
    IMPLEMENTATIONS.append(PyCudaMemory)
if importlib.util.find_spec("cuda") is not None:
    IMPLEMENTATIONS.append(CudaPythonMemory)

pytestmark = pytest.mark.skipif(not IMPLEMENTATIONS or gpu_count() == 0,
                                reason="needs a CUDA GPU and pycuda or cuda-python")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_round_trip_through_the_device(implementation):
    memory = implementation(0)
    assert memory.device_name and memory.compute_capability.replace(".", "").isdigit()
    with memory.activate():
        stream = memory.stream()
        assert isinstance(stream.handle, int) and stream.handle != 0
        source = memory.pinned((6, 16, 32, 32, 3), np.uint8)
        source[:] = np.random.default_rng(0).integers(0, 256, source.shape, dtype=np.uint8)
        back = memory.pinned((6, 16, 32, 32, 3), np.uint8)
        address = memory.allocate(source.nbytes)
        memory.to_device(address, source[:4], stream)  # a partial batch, as the engine copies it
        memory.to_host(back[:4], address, stream)
        stream.synchronize()
        np.testing.assert_array_equal(back[:4], source[:4])
        assert not back[4:].any()

        floats = memory.pinned((6, 400), np.float32)
        floats[:] = np.arange(floats.size, dtype=np.float32).reshape(floats.shape)
        float_address = memory.allocate(floats.nbytes)
        result = memory.pinned((6, 400), np.float32)
        memory.to_device(float_address, floats, stream)
        memory.to_host(result, float_address, stream)
        stream.synchronize()
        np.testing.assert_array_equal(result, floats)
    memory.close()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_activation_works_from_another_thread(implementation):
    """The engine may be called from a worker thread other than the one that created it."""
    import threading

    memory = implementation(0)
    with memory.activate():
        stream = memory.stream()
        data = memory.pinned((1024,), np.uint8)
        data[:] = 7
        address = memory.allocate(data.nbytes)
    errors = []

    def worker():
        try:
            out = memory.pinned((1024,), np.uint8)
            with memory.activate():
                memory.to_device(address, data, stream)
                memory.to_host(out, address, stream)
                stream.synchronize()
            assert (out == 7).all()
        except Exception as err:  # surfaced below
            errors.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert not errors, errors
    memory.close()
