"""The TensorRT engine's streaming path (``state`` in, ``new_state`` out), driven through
test_tensorrt's stand-ins of TensorRT and CUDA, grown a stateful engine: its "network" computes
a known function of the frames and the state, so logits and new state are checked exactly through
the pinned buffers, copies and addresses.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_tensorrt import CLASSES, PLAN_MAGIC, SPECS, FakeContext, FakeDevice, FakeEngine, FakeTensorRT, fake_network

from streamrec.backends.inputs import StateSpec
from streamrec.backends.tensorrt_backend import TensorRTEngine
from streamrec.errors import StreamrecError

STATE = 10


def stateful_step(frames: dict[str, np.ndarray], state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the stand-in's streaming engines compute."""
    logits = fake_network(frames) + state.sum(1, keepdims=True) / 1000.0
    means = frames["fast"].reshape(len(state), -1).astype(np.float64).mean(1, keepdims=True)
    return logits.astype(np.float32), (0.5 * state + means).astype(np.float32)


class StatefulContext(FakeContext):
    def get_tensor_shape(self, name):
        if name == StateSpec.output:
            return self.shapes.get(StateSpec.name, (-1, STATE))
        return super().get_tensor_shape(name)

    def execute_async_v3(self, stream_handle) -> bool:
        device = self.engine.device
        device.require_context("enqueueV3")
        stream = device.streams[stream_handle]
        shapes, addresses = dict(self.shapes), dict(self.addresses)

        def read(name: str, dtype) -> np.ndarray:
            count = int(np.prod(shapes[name]))
            return np.frombuffer(device.buffers[addresses[name]][:count * np.dtype(dtype).itemsize],
                                 dtype).reshape(shapes[name])

        def compute() -> None:
            frames = {s.name: read(s.name, np.uint8) for s in SPECS}
            logits, new_state = stateful_step(frames, read(StateSpec.name, np.float32))
            device.buffers[addresses["logits"]][:logits.nbytes] = logits.tobytes()
            device.buffers[addresses[StateSpec.output]][:new_state.nbytes] = new_state.tobytes()

        stream.enqueue(compute)
        return True


class StatefulEngine(FakeEngine):
    def __init__(self, header: dict, api):
        super().__init__(header, api)
        self.names += header.get("extra_outputs", [])

    def get_tensor_shape(self, name):
        return (-1, STATE) if name == StateSpec.output else super().get_tensor_shape(name)

    def create_execution_context(self):
        self.contexts.append(StatefulContext(self))
        return self.contexts[-1]


class StatefulTensorRT(FakeTensorRT):
    def deserialize(self, plan: bytes):
        super().deserialize(plan)  # its checks, and its engine, replaced by a stateful one
        self.engines[-1] = StatefulEngine(json.loads(plan), self)
        return self.engines[-1]


def plan(api, batch=(1, 4, 6), state: bool = True, new_state: bool = True) -> bytes:
    low, opt, high = batch
    profiles = {s.name: [[b, *s.clip_shape] for b in (low, opt, high)] for s in SPECS}
    dtypes = {s.name: "UINT8" for s in SPECS} | {"logits": "FLOAT"}
    if state:
        profiles[StateSpec.name] = [[b, STATE] for b in (low, opt, high)]
        dtypes |= {StateSpec.name: "FLOAT", StateSpec.output: "FLOAT"}
    return json.dumps({"magic": PLAN_MAGIC, "version": api.version, "profiles": profiles, "classes": CLASSES,
                       "dtypes": dtypes, "extra_outputs": [StateSpec.output] if new_state else []}).encode()


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def api(device) -> StatefulTensorRT:
    return StatefulTensorRT(device)


def frames(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.integers(0, 256, (batch, *s.clip_shape), dtype=np.uint8) for s in SPECS}


def test_step_carries_each_row_s_state_through_the_engine_at_every_batch_size(api, device):
    engine = TensorRTEngine(plan(api, batch=(2, 4, 6)), api, device, SPECS, CLASSES)
    assert engine.state == StateSpec(STATE) and (engine.min_batch, engine.max_batch) == (2, 6)
    rng = np.random.default_rng(0)
    for size in range(1, 7):  # 1 is below the profile's minimum: a zero row pads it, and is dropped
        state = rng.normal(size=(size, STATE)).astype(np.float32)
        batch = frames(size, seed=size)
        for _ in range(3):  # a sequence of calls, each fed the state the last returned
            logits, new_state = engine.step({**batch, StateSpec.name: state})
            expected_logits, expected_state = stateful_step(batch, state)
            assert logits.shape == (size, CLASSES) and new_state.shape == (size, STATE)
            np.testing.assert_allclose(logits, expected_logits, rtol=1e-6)
            np.testing.assert_allclose(new_state, expected_state, rtol=1e-6)
            state = new_state
    float_copies = [n for dtype, n in device.copies_to_device if dtype == np.float32]
    assert float_copies and float_copies[-1] == 6 * STATE * 4  # the state crosses as float32, a row per clip


def test_a_streaming_engine_refuses_infer_and_bad_state_in_one_line(api, device):
    engine = TensorRTEngine(plan(api), api, device, SPECS, CLASSES)
    with pytest.raises(StreamrecError, match="run it with step"):
        engine.infer(frames(2, 0))
    with pytest.raises(StreamrecError, match="'state' is missing"):
        engine.step(frames(2, 0))
    with pytest.raises(StreamrecError, match=rf"float32 \[2, {STATE}\]"):
        engine.step({**frames(2, 0), StateSpec.name: np.zeros((2, STATE + 1), np.float32)})
    clip_engine = TensorRTEngine(plan(api, state=False, new_state=False), api, device, SPECS, CLASSES)
    assert clip_engine.state is None
    with pytest.raises(StreamrecError, match="run it with infer"):
        clip_engine.step(frames(2, 0))
    with pytest.raises(StreamrecError, match="carries no state"):
        clip_engine.infer({**frames(2, 0), StateSpec.name: np.zeros((2, STATE), np.float32)})


def test_a_state_input_without_a_new_state_output_is_refused(api, device):
    with pytest.raises(StreamrecError, match="returns logits and new_state") as err:
        TensorRTEngine(plan(api, new_state=False), api, device, SPECS, CLASSES)
    assert "\n" not in str(err.value) and device.closed
