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

from streamrec.backends import create_engine
from streamrec.backends.engine_cache import EngineRecord
from streamrec.backends.inputs import StateSpec
from streamrec.backends.tensorrt_backend import TensorRTEngine
from streamrec.config import load_config
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


def plan(api, batch=(1, 4, 6), state: bool = True, new_state: bool = True, state_batch=None) -> bytes:
    """A streaming engine's plan; ``state_batch`` gives the state its own batch range (an engine
    built elsewhere can have one; streamrec's own builds give every input the same)."""
    low, opt, high = batch
    profiles = {s.name: [[b, *s.clip_shape] for b in (low, opt, high)] for s in SPECS}
    dtypes = {s.name: "UINT8" for s in SPECS} | {"logits": "FLOAT"}
    if state:
        profiles[StateSpec.name] = [[b, STATE] for b in (state_batch or batch)]
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


def test_the_batch_range_is_what_the_clips_and_the_state_both_allow(api, device):
    engine = TensorRTEngine(plan(api, batch=(1, 4, 6), state_batch=(2, 3, 4)), api, device, SPECS, CLASSES)
    assert (engine.min_batch, engine.max_batch) == (2, 4)
    state = np.ones((4, STATE), np.float32)
    logits, new_state = engine.step({**frames(4, 0), StateSpec.name: state})
    np.testing.assert_allclose(new_state, stateful_step(frames(4, 0), state)[1], rtol=1e-6)
    with pytest.raises(StreamrecError, match="4"):  # past what the state's profile takes: one line, not numpy's
        engine.step({**frames(5, 0), StateSpec.name: np.ones((5, STATE), np.float32)})


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


# --------------------------------------------------------------------------- through create_engine and the pipeline


class OnnxRuntimeContext(FakeContext):
    """An execution context whose engine is the ONNX graph it was built from, run by ONNX Runtime:
    everything around TensorRT's own call (export, build, record, buffers, state rows, padding)
    is this project's code, checked numerically."""

    def get_tensor_shape(self, name):
        if name in self.engine.profiles:
            return super().get_tensor_shape(name)
        batch = self.shapes.get(StateSpec.name, (-1,))[0]
        return (batch, self.engine.state_size) if name == StateSpec.output else (batch, self.engine.classes)

    def execute_async_v3(self, stream_handle) -> bool:
        device = self.engine.device
        device.require_context("enqueueV3")
        stream = device.streams[stream_handle]
        shapes, addresses = dict(self.shapes), dict(self.addresses)

        def compute() -> None:
            feeds = {}
            for name, shape in shapes.items():
                dtype = np.float32 if name == StateSpec.name else np.uint8
                count = int(np.prod(shape)) * np.dtype(dtype).itemsize
                feeds[name] = np.frombuffer(device.buffers[addresses[name]][:count], dtype).reshape(shape)
            for name, array in zip(["logits", StateSpec.output], self.engine.session.run(None, feeds)):
                device.buffers[addresses[name]][:array.nbytes] = np.ascontiguousarray(array, np.float32).tobytes()

        stream.enqueue(compute)
        return True


class OnnxRuntimeEngine(FakeEngine):
    def __init__(self, header: dict, api, graph: bytes):
        import onnxruntime

        super().__init__(header, api)
        self.names.append(StateSpec.output)
        self.state_size = header["profiles"][StateSpec.name][0][1]
        self.session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])

    def create_execution_context(self):
        self.contexts.append(OnnxRuntimeContext(self))
        return self.contexts[-1]


class OnnxRuntimeTensorRT(FakeTensorRT):
    """Builds keep the graph; engines run it (`OnnxRuntimeEngine`)."""

    def __init__(self, device):
        super().__init__(device)
        self.graphs: dict[str, bytes] = {}

    def build(self, onnx_bytes, profile, workspace_bytes, timing_cache, progress, *, tf32):
        result = super().build(onnx_bytes, profile, workspace_bytes, timing_cache, progress, tf32=tf32)
        header = json.loads(result.plan)
        header["dtypes"][StateSpec.name] = header["dtypes"][StateSpec.output] = "FLOAT"
        header["graph"] = str(len(self.graphs))
        self.graphs[header["graph"]] = onnx_bytes
        return type(result)(json.dumps(header).encode(), result.timing_cache)

    def deserialize(self, plan: bytes):
        super().deserialize(plan)
        header = json.loads(plan)
        self.engines[-1] = OnnxRuntimeEngine(header, self, self.graphs[header["graph"]])
        return self.engines[-1]


@pytest.fixture
def onnx_tensorrt(monkeypatch, device, engine_dir) -> OnnxRuntimeTensorRT:
    """TensorRT and the GPU stood in for, through create_engine's own imports."""
    api = OnnxRuntimeTensorRT(device)
    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: device)
    return api


STREAMING = "slowfast_tiny_streaming"  # hop 8: a call takes 1 Slow and 4 Fast frames of 96 px


def test_a_streaming_config_builds_an_engine_that_steps_as_onnx_runtime_does(onnx_tensorrt, engine_dir):
    """No engine file: the streaming form is exported, built once, recorded with its graph's
    metadata, and steps a batch of streams through a sequence of hops as the ONNX Runtime engine
    of the same config does."""
    config = load_config(STREAMING, ["engine.backend=tensorrt", "engine.device=cuda", "pipeline.max_batch=4"])
    engine = create_engine(config)
    reference = create_engine(load_config(STREAMING, ["engine.backend=onnxruntime", "engine.device=cpu"]))
    assert engine.streaming == reference.streaming and engine.state == reference.state
    (built,) = engine_dir.glob("*.engine")
    assert EngineRecord.load(built).metadata["streaming"]["form"] == "delayed_exact"
    rng = np.random.default_rng(0)
    states = [engine.state.zeros(3), reference.state.zeros(3)]
    for _ in range(engine.streaming.warmup_units + 2):  # a sequence of hops, each fed the last one's state
        frames = {"slow": rng.integers(0, 256, (3, 1, 96, 96, 3), np.uint8),
                  "fast": rng.integers(0, 256, (3, 4, 96, 96, 3), np.uint8)}
        (logits, states[0]), (expected, states[1]) = [e.step({**frames, StateSpec.name: s})
                                                      for e, s in zip((engine, reference), states)]
        np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(states[0], states[1], atol=1e-4)
    assert create_engine(config).streaming == engine.streaming and onnx_tensorrt.builds == 1  # reused


def test_a_streaming_engine_for_another_hop_or_without_its_record_is_one_line(onnx_tensorrt, engine_dir):
    create_engine(load_config(STREAMING, ["engine.backend=tensorrt", "engine.device=cuda"]))
    (built,) = engine_dir.glob("*.engine")
    given = ["engine.backend=tensorrt", f"engine.engine_file={built}"]
    with pytest.raises(StreamrecError, match="streams delayed_exact at a hop of 8 frames, the config asks for "
                                             "causal at a hop of 8 frames") as err:
        create_engine(load_config(STREAMING, [*given, "streaming.form=causal"]))
    assert "\n" not in str(err.value)
    with pytest.raises(StreamrecError, match=r"input 'slow' is uint8 \[4, 1, 96, 96, 3\]; the config needs uint8 "
                                             r"\[B, 2, 96, 96, 3\]"):  # hop 16: two Slow frames a call
        create_engine(load_config(STREAMING, [*given, "pipeline.hop_frames=16"]))
    with pytest.raises(StreamrecError, match="input 'slow' is uint8.*a streaming engine: it runs with the streaming: "
                                             "section and hop its graph was exported for"):  # a clip config
        create_engine(load_config("slowfast_tiny", given))
    EngineRecord.path_for(built).unlink()  # built elsewhere: nothing says how its calls line up with frames
    with pytest.raises(StreamrecError, match="not a streaming model with streamrec's metadata"):
        create_engine(load_config(STREAMING, given))
    with pytest.raises(StreamrecError, match="int8 has no streaming form"):
        create_engine(load_config(STREAMING, ["engine.backend=tensorrt", "engine.precision=int8"]))
