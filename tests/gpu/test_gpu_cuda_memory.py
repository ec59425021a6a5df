"""On a CUDA GPU: both `DeviceMemory` implementations move real bytes, from the opening thread and
from a worker thread (see gpu_support.py for what runs where, and STREAMREC_REQUIRE_GPU).

    pip install pycuda 'cuda-python>=12,<13'   # cuda-python '>=13,<14' with driver 580+
    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gpu_support import memory  # noqa: F401  (fixtures, used by name)

pytestmark = pytest.mark.usefixtures("engine_dir")


def test_round_trip_through_the_device(memory):
    assert memory.device_name and memory.compute_capability.replace(".", "").isdigit()
    with memory.activate():
        stream = memory.stream()
        assert isinstance(stream.handle, int) and stream.handle != 0
        source = memory.pinned((6, 16, 32, 32, 3), np.uint8)
        source[:] = np.random.default_rng(0).integers(0, 256, source.shape, dtype=np.uint8)
        back = memory.pinned((6, 16, 32, 32, 3), np.uint8)
        back[:] = 0
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


def test_activation_works_from_another_thread(memory):
    """The engine is called from a worker thread other than the one that created it; every
    memory call, pinned buffers included, happens inside ``activate()`` there."""
    with memory.activate():
        stream = memory.stream()
        data = memory.pinned((1024,), np.uint8)
        data[:] = 7
        address = memory.allocate(data.nbytes)
    errors = []

    def worker():
        try:
            with memory.activate():
                out = memory.pinned((1024,), np.uint8)
                out[:] = 0
                memory.to_device(address, data, stream)
                memory.to_host(out, address, stream)
                stream.synchronize()
            assert (out == 7).all()
        except Exception as err:  # surfaced below
            errors.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert not errors, errors
