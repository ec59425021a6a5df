"""The TensorRT backend's own logic, driven through stand-ins: of `trt_api.TensorRT` and
`cuda_memory.DeviceMemory` for the engine and build logic, and one level down, of the
``tensorrt``, ``pycuda.driver`` and cuda-python modules themselves for `trt_api.RealTensorRT`
and `cuda_memory` (none of them can be installed where these tests run).

The stand-ins behave as the real libraries do in every respect the backend relies on, and fail
as they fail: dynamic axes are -1 until ``set_input_shape``; shapes outside the profile,
unknown tensor names and misaligned addresses are refused with False and a reported error;
outputs take their shape from the inputs; a CUDA context is current per thread and pycuda
refuses memory calls without one ("no currently active context?"); copies and execution are
queued on a stream and happen only when it is synchronized, reading the pinned host buffer
then; a plan it did not write, or wrote for another version, fails to deserialise with
reported errors; TF32 is on in a new builder config; a Python logger receives every message
TensorRT emits, VERBOSE included, while its own Logger filters in C++; ``set_timing_cache``
returns False for another GPU's cache, after which ``get_timing_cache`` is None;
``trt.nptype`` raises TypeError for BF16 and FP8; cuda-python answers every call with
``cudaErrorInsufficientDriver`` on a driver older than its CUDA, and warns on ``int(stream)``.
Its "network" computes a known function of the inputs, so results are checked exactly, through
the whole path of pinned buffers, copies and addresses.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import enum
import json
import logging
import sys
import threading
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from streamrec.backends import create_engine
from streamrec.backends.engine_cache import BatchProfile, EngineRecord
from streamrec.backends.inputs import InputSpec
from streamrec.backends.tensorrt_backend import TensorRTEngine, read_plan
from streamrec.backends.tensorrt_build import build_engine, cached_engine, engine_key
from streamrec.backends.trt_api import KEPT_ERRORS, BuildResult, OnnxParseError, ParserIssue, TensorRTError
from streamrec.config import load_config
from streamrec.errors import StreamrecError

SPECS = (InputSpec("slow", 2, 8), InputSpec("fast", 8, 8))
CLASSES = 5
PLAN_MAGIC = "fake-plan"
NO_CONTEXT = "explicit_context_dependent failed: invalid device context - no currently active context?"
pytestmark = pytest.mark.usefixtures("engine_dir")  # every test gets an empty engine cache


# --------------------------------------------------------------------------- the stand-ins


class FakeStream:
    """A CUDA stream: work queued on it runs, in order, when it is synchronized."""

    def __init__(self, memory: "FakeDevice", handle: int):
        self.memory, self.handle = memory, handle
        self.queued: list = []

    def enqueue(self, work) -> None:
        self.queued.append(work)

    def synchronize(self) -> None:
        self.memory.require_context("cuStreamSynchronize")
        while self.queued:
            self.queued.pop(0)()
        self.memory.synchronized += 1


class FakeDevice:
    """`DeviceMemory`: device allocations are byte arrays; an address is a key into them. The
    context is current per thread, as CUDA's is, and every call but activate and close needs it."""

    def __init__(self, name: str = "NVIDIA Fake GPU", capability: str = "8.7", misaligned: bool = False):
        self.device_name, self.compute_capability = name, capability
        self.misaligned = misaligned  # hand out addresses TensorRT refuses (cudaMalloc's are 256-byte aligned)
        self.buffers: dict[int, bytearray] = {}
        self.pinned_arrays: list[np.ndarray] = []
        self.streams: dict[int, FakeStream] = {}
        self.copies_to_device: list[tuple[np.dtype, int]] = []
        self._current = threading.local()
        self.synchronized = 0
        self.closed = False

    @property
    def active(self) -> bool:
        return getattr(self._current, "depth", 0) > 0

    def require_context(self, call: str) -> None:
        if not self.active:
            raise RuntimeError(f"{call} failed: {NO_CONTEXT}")

    @contextmanager
    def activate(self):
        self._current.depth = getattr(self._current, "depth", 0) + 1
        try:
            yield
        finally:
            self._current.depth -= 1

    def pinned(self, shape, dtype) -> np.ndarray:
        self.require_context("pagelocked_empty")
        array = np.zeros(shape, dtype)
        self.pinned_arrays.append(array)
        return array

    def allocate(self, nbytes: int) -> int:
        self.require_context("mem_alloc")
        address = 0x1000 * (len(self.buffers) + 1) + (8 if self.misaligned else 0)
        self.buffers[address] = bytearray(nbytes)
        return address

    def stream(self) -> FakeStream:
        self.require_context("Stream")
        stream = FakeStream(self, 77 + len(self.streams))
        self.streams[stream.handle] = stream
        return stream

    def to_device(self, address: int, host: np.ndarray, stream: FakeStream) -> None:
        self.require_context("memcpy_htod_async")
        assert host.flags.c_contiguous
        assert host.nbytes <= len(self.buffers[address]), "copy overruns the device buffer"
        self.copies_to_device.append((host.dtype, host.nbytes))

        def copy() -> None:  # reads the host buffer when the stream runs it, as a DMA from pinned memory does
            self.buffers[address][: host.nbytes] = host.tobytes()

        stream.enqueue(copy)

    def to_host(self, host: np.ndarray, address: int, stream: FakeStream) -> None:
        self.require_context("memcpy_dtoh_async")
        assert host.flags.c_contiguous

        def copy() -> None:
            host.reshape(-1).view(np.uint8)[:] = np.frombuffer(self.buffers[address][: host.nbytes], np.uint8)

        stream.enqueue(copy)

    def close(self) -> None:
        self.buffers.clear()
        self.pinned_arrays.clear()
        self.streams.clear()
        self.closed = True


def fake_network(inputs: dict[str, np.ndarray], classes: int = CLASSES) -> np.ndarray:
    """What the stand-in's engines compute: per clip, class c scores (sum of the inputs' means) / 100 + c."""
    means = [inputs[name].reshape(len(inputs[name]), -1).astype(np.float64).mean(1) for name in sorted(inputs)]
    total = np.sum(means, axis=0)
    return (total[:, None] / 100.0 + np.arange(classes)[None, :]).astype(np.float32)


class FakeContext:
    def __init__(self, engine: "FakeEngine"):
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.fail_next_execution: str | None = None  # the error the next execute_async_v3 reports

    def report(self, message: str) -> bool:
        self.engine.api.errors.append(message)
        return False

    def set_input_shape(self, name, shape) -> bool:
        self.engine.device.require_context("setInputShape")
        if name not in self.engine.profiles:
            return self.report(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ('{name}' is not an "
                               "input tensor)")
        low, _, high = self.engine.profiles[name]
        if self.engine.refuse_shapes or len(shape) != len(low) or \
                not all(a <= s <= b for a, s, b in zip(low, shape, high)):
            return self.report(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Static dimension "
                               f"mismatch or out of the profile for '{name}': {list(shape)})")
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name in self.engine.profiles:
            return self.shapes.get(name, self.engine.get_tensor_shape(name))
        batches = {s[0] for s in self.shapes.values()}
        return (batches.pop(), self.engine.classes) if len(self.shapes) == len(self.engine.profiles) and len(batches) == 1 else (-1, self.engine.classes)

    def set_tensor_address(self, name, memory) -> bool:
        if name not in self.engine.names:
            return self.report(f"IExecutionContext::setTensorAddress: Error Code 3: '{name}' is not a tensor")
        if memory % 256:
            return self.report(f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Address for "
                               f"'{name}' is not 256-byte aligned)")
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle) -> bool:
        device = self.engine.device
        device.require_context("enqueueV3")
        if self.fail_next_execution is not None:  # "": fail without a word, as TensorRT sometimes does
            message, self.fail_next_execution = self.fail_next_execution, None
            return self.report(message) if message else False
        stream = device.streams[stream_handle]
        shapes, addresses = dict(self.shapes), dict(self.addresses)

        def compute() -> None:  # runs when the stream is synchronized, on what the copies queued before it wrote
            inputs = {}
            for name, shape in shapes.items():
                size = int(np.prod(shape))
                inputs[name] = np.frombuffer(device.buffers[addresses[name]][:size], np.uint8).reshape(shape)
            logits = fake_network(inputs, self.engine.classes)
            device.buffers[addresses["logits"]][: logits.nbytes] = logits.tobytes()

        stream.enqueue(compute)
        return True


class FakeEngine:
    def __init__(self, header: dict, api: "FakeTensorRT"):
        self.api = api
        self.device = api.device
        self.profiles = {name: [tuple(s) for s in shapes] for name, shapes in header["profiles"].items()}
        self.dtypes = header["dtypes"]
        self.classes = header["classes"]
        self.names = [*self.profiles, "logits"]
        self.refuse_shapes = False
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return "INPUT" if name in self.profiles else "OUTPUT"

    def get_tensor_dtype(self, name):
        return self.dtypes.get(name, "FLOAT")

    def get_tensor_shape(self, name):
        if name in self.profiles:
            low, _, high = self.profiles[name]
            return tuple(-1 if a != b else a for a, b in zip(low, high))
        return (-1, self.classes)

    def get_tensor_profile_shape(self, name, profile_index):
        assert profile_index == 0 and name in self.profiles
        return self.profiles[name]

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class FakeTensorRT:
    """`trt_api.TensorRT`: builds read the ONNX graph's inputs; plans are JSON it alone reads."""

    def __init__(self, device: FakeDevice, version: str = "10.3.0", input_dtype: str = "UINT8",
                 output_dtype: str = "FLOAT"):
        self.device = device
        self.version = version
        self.input_dtype, self.output_dtype = input_dtype, output_dtype
        self.errors: list[str] = []
        self.builds = 0
        self.build_workspace: int | None = None
        self.build_tf32: list[bool] = []
        self.monitored_builds = 0
        self.keep_timing_cache = True
        self.engines: list[FakeEngine] = []

    def deserialize(self, plan: bytes):
        self.device.require_context("deserializeCudaEngine")
        self.errors.clear()
        try:
            header = json.loads(plan)
            assert header["magic"] == PLAN_MAGIC
        except (ValueError, AssertionError, KeyError, TypeError):
            self.errors.append("IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                               "(Serialization assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)")
            raise TensorRTError(self.take_errors())
        if header["version"] != self.version:
            self.errors.append(f"Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed. "
                               f"Version tag does not match ({header['version']} vs {self.version})")
            raise TensorRTError(self.take_errors())
        self.engines.append(FakeEngine(header, self))
        return self.engines[-1]

    def is_input(self, mode) -> bool:
        return mode == "INPUT"

    def numpy_dtype(self, dtype) -> np.dtype | None:
        return {"UINT8": np.dtype(np.uint8), "FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16)}.get(dtype)

    def take_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors

    def build(self, onnx_bytes, profile, workspace_bytes, timing_cache, progress, *, tf32) -> BuildResult:
        self.device.require_context("buildSerializedNetwork")
        graph = onnx.load_from_string(onnx_bytes).graph
        unsupported = [n for n in graph.node if n.op_type == "Unsupported"]
        if unsupported:
            raise OnnxParseError([ParserIssue(n.name, n.op_type, f"No importer registered for op: {n.op_type}")
                                  for n in unsupported])
        profiles = {}
        for graph_input in graph.input:
            shape = tuple(d.dim_value if d.dim_value else -1 for d in graph_input.type.tensor_type.shape.dim)
            profiles[graph_input.name] = profile(graph_input.name, shape)
        classes = graph.output[0].type.tensor_type.shape.dim[1].dim_value
        if progress is not None:  # a progress monitor reports the build's phases
            self.monitored_builds += 1
            progress("Building engine ...")
        self.builds += 1
        self.build_workspace = workspace_bytes
        self.build_tf32.append(tf32)
        plan = {"magic": PLAN_MAGIC, "version": self.version, "profiles": profiles, "classes": classes,
                "dtypes": {**{name: self.input_dtype for name in profiles}, "logits": self.output_dtype}}
        cache = (timing_cache or b"") + b"+timings" if self.keep_timing_cache else None
        return BuildResult(json.dumps(plan).encode(), cache)


# --------------------------------------------------------------------------- helpers


def contract_onnx(path: Path, batch: int | None = None, classes: int = CLASSES, extra_op: str | None = None,
                  half: bool = False) -> Path:
    """A small graph with the engine contract's inputs and output (the stand-in only reads those)."""
    batch_dim = batch if batch else "batch"
    inputs = [helper.make_tensor_value_info(s.name, TensorProto.UINT8, [batch_dim, *s.clip_shape]) for s in SPECS]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, classes])
    weight_type = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    weight = helper.make_tensor("weight", weight_type, [1], [1.0])
    nodes = [helper.make_node("Cast", ["fast"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0, name="mean"),
             helper.make_node("Expand", ["m", "shape"], ["logits"], name="expand")]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, classes])
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["f"], ["x"], name="custom_layer_7"))
    graph = helper.make_graph(nodes, "contract", inputs, [output], initializer=[weight, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def clips(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.integers(0, 256, (batch, *s.clip_shape), dtype=np.uint8) for s in SPECS}


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def api(device) -> FakeTensorRT:
    return FakeTensorRT(device)


def quiet(_line: str) -> None:
    pass


def built(tmp_path, api, device, batch=BatchProfile(1, 4, 4), **kwargs) -> Path:
    onnx_file = contract_onnx(tmp_path / "model.onnx", **kwargs)
    return build_engine(onnx_file, "fp32", batch, api, device, progress=quiet)


# --------------------------------------------------------------------------- building and the cache


def test_build_writes_engine_record_and_timing_cache_named_by_the_key(tmp_path, api, device, engine_dir):
    path = built(tmp_path, api, device)
    key = engine_key((tmp_path / "model.onnx").read_bytes(), "fp32", BatchProfile(1, 4, 4), api, device)
    assert path == engine_dir / f"model.fp32.b1-4-4.{key.digest[:12]}.engine"
    record = EngineRecord.load(path)
    assert record.key == key and record.onnx_file == str(tmp_path / "model.onnx")
    assert (engine_dir / "timing.trt10.3.0.nvidia-fake-gpu.sm8.7.cache").read_bytes() == b"+timings"


def test_timing_cache_is_fed_back_into_the_next_build(tmp_path, api, device, engine_dir):
    built(tmp_path, api, device)
    built(tmp_path, api, device, batch=BatchProfile(1, 2, 2))
    assert (engine_dir / "timing.trt10.3.0.nvidia-fake-gpu.sm8.7.cache").read_bytes() == b"+timings+timings"


def test_cache_key_changes_with_onnx_precision_profile_version_and_gpu(api, device):
    base = engine_key(b"graph", "fp32", BatchProfile(1, 4, 4), api, device)
    assert engine_key(b"graph", "fp32", BatchProfile(1, 4, 4), api, device).digest == base.digest
    changed = [
        engine_key(b"graph2", "fp32", BatchProfile(1, 4, 4), api, device),
        engine_key(b"graph", "fp16", BatchProfile(1, 4, 4), api, device),
        engine_key(b"graph", "fp32", BatchProfile(1, 4, 8), api, device),
        engine_key(b"graph", "fp32", BatchProfile(1, 4, 4), FakeTensorRT(device, version="11.1.0"), device),
        engine_key(b"graph", "fp32", BatchProfile(1, 4, 4), api, FakeDevice("NVIDIA H100", "9.0")),
    ]
    assert len({k.digest for k in changed} | {base.digest}) == len(changed) + 1
    assert changed[3].differences(base) == ["TensorRT 10.3.0 -> 11.1.0"]
    assert changed[4].differences(base) == ["GPU NVIDIA Fake GPU -> NVIDIA H100", "compute capability 8.7 -> 9.0"]


def test_a_matching_engine_is_reused_and_a_changed_one_rebuilt_with_the_reason(tmp_path, api, device):
    onnx_file = contract_onnx(tmp_path / "model.onnx")
    lines: list[str] = []
    first = cached_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), api, device, progress=lines.append)
    again = cached_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), api, device, progress=lines.append)
    assert again == first and api.builds == 1
    assert any("reusing" in line for line in lines)

    lines.clear()
    wider = cached_engine(onnx_file, "fp32", BatchProfile(1, 8, 8), api, device, progress=lines.append)
    assert wider != first and api.builds == 2
    assert f"not reusing {first.name}: batch profile 1:4:4 -> 1:8:8" in lines

    contract_onnx(onnx_file, classes=CLASSES, extra_op="Relu")  # the graph changed
    lines.clear()
    cached_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), api, device, progress=lines.append)
    assert api.builds == 3 and f"not reusing {first.name}: ONNX file contents changed" in lines


def test_workspace_limit_reaches_the_builder_in_bytes(tmp_path, api, device):
    onnx_file = contract_onnx(tmp_path / "model.onnx")
    build_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), api, device, workspace_mb=512, progress=quiet)
    assert api.build_workspace == 512 * 2**20


def test_precision_must_match_the_graph(tmp_path, api, device):
    onnx_file = contract_onnx(tmp_path / "model.onnx")
    with pytest.raises(StreamrecError, match="is an fp32 graph but precision fp16 was asked.*export --fp16"):
        build_engine(onnx_file, "fp16", BatchProfile(1, 4, 4), api, device, progress=quiet)
    with pytest.raises(StreamrecError, match="precision int8 was asked.*--calibration"):
        build_engine(onnx_file, "int8", BatchProfile(1, 4, 4), api, device, progress=quiet)
    half = contract_onnx(tmp_path / "half.onnx", half=True)
    assert build_engine(half, "fp16", BatchProfile(1, 4, 4), api, device, progress=quiet).is_file()


def test_fixed_batch_graph_needs_a_matching_profile(tmp_path, api, device):
    onnx_file = contract_onnx(tmp_path / "b2.onnx", batch=2)
    with pytest.raises(StreamrecError, match="fixed batch of 2; build it with --batch 2:2:2"):
        build_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), api, device, progress=quiet)
    path = build_engine(onnx_file, "fp32", BatchProfile.parse("2:2:2"), api, device, progress=quiet)
    engine = TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)  # static shapes: no profile
    assert (engine.min_batch, engine.max_batch) == (2, 2)
    one = clips(1)
    np.testing.assert_allclose(engine.infer(one), fake_network(one), rtol=1e-6)


def test_parser_errors_name_the_node(tmp_path, api, device):
    onnx_file = contract_onnx(tmp_path / "model.onnx", extra_op="Unsupported")
    with pytest.raises(StreamrecError) as caught:
        build_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), api, device, progress=quiet)
    message = str(caught.value)
    assert "node 'custom_layer_7' (Unsupported): No importer registered" in message and "\n" not in message


def test_batch_profile_parsing():
    assert BatchProfile.parse("1:4:8") == BatchProfile(1, 4, 8)
    assert BatchProfile.parse("6") == BatchProfile(1, 6, 6)
    for bad in ("4:1:8", "1:2", "a:b:c", "0:1:1"):
        with pytest.raises(StreamrecError, match="MIN"):
            BatchProfile.parse(bad)


# --------------------------------------------------------------------------- running


def test_engine_runs_every_batch_size_through_pinned_buffers(tmp_path, api, device):
    path = built(tmp_path, api, device, batch=BatchProfile(2, 4, 6))
    engine = TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)
    assert (engine.min_batch, engine.max_batch) == (2, 6)
    for size in range(1, 7):  # 1 is below the profile's minimum: padded to 2, the padding dropped
        batch = clips(size, seed=size)
        logits = engine.infer(batch)
        assert logits.dtype == np.float32 and logits.shape == (size, CLASSES)
        np.testing.assert_allclose(logits, fake_network(batch), rtol=1e-6)
    with pytest.raises(StreamrecError, match="this engine takes 1 to 6"):
        engine.infer(clips(7))


def test_buffers_are_allocated_once_at_the_maximum_and_uint8_crosses_the_bus(tmp_path, api, device):
    path = built(tmp_path, api, device, batch=BatchProfile(1, 4, 6))
    engine = TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)
    sizes = sorted(len(b) for b in device.buffers.values())
    assert sizes == sorted([6 * 2 * 8 * 8 * 3, 6 * 8 * 8 * 8 * 3, 6 * CLASSES * 4])
    assert sorted(a.nbytes for a in device.pinned_arrays) == sizes
    allocated = len(device.buffers)
    engine.infer(clips(3))
    assert len(device.buffers) == allocated  # nothing allocated per call
    assert device.synchronized == 1  # one wait per call, after the copy back
    assert device.copies_to_device == [(np.dtype(np.uint8), 3 * 2 * 8 * 8 * 3), (np.dtype(np.uint8), 3 * 8 * 8 * 8 * 3)]
    engine.close()
    assert device.closed


def test_engine_must_take_uint8_clips_of_the_config(tmp_path, device):
    float_api = FakeTensorRT(device, input_dtype="FLOAT")
    path = built(tmp_path, float_api, device)
    with pytest.raises(StreamrecError, match="input 'slow' is float32.*uint8"):
        TensorRTEngine(read_plan(path, float_api, device), float_api, device, SPECS, CLASSES)


def test_engine_must_have_the_config_class_count(tmp_path, api, device):
    path = built(tmp_path, api, device, classes=7)
    with pytest.raises(StreamrecError, match="5 classes"):
        TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)


# --------------------------------------------------------------------------- errors, one line each


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_engine_for_another_tensorrt_version_is_refused_with_the_fix(tmp_path, device):
    path = built(tmp_path, FakeTensorRT(device, version="10.3.0"), device)
    with pytest.raises(StreamrecError) as err:
        read_plan(path, FakeTensorRT(device, version="11.1.0"), device)
    assert "built with TensorRT 10.3.0" in one_line(err) and "this machine has TensorRT 11.1.0" in one_line(err)
    assert f"build-engine --onnx {tmp_path / 'model.onnx'}" in one_line(err)


def test_engine_for_another_gpu_architecture_is_refused(tmp_path, api, device, caplog):
    path = built(tmp_path, api, device)
    with pytest.raises(StreamrecError) as err:
        read_plan(path, api, FakeDevice("NVIDIA H100", "9.0"))
    assert "for NVIDIA Fake GPU (compute 8.7)" in one_line(err) and "NVIDIA H100 (compute 9.0)" in one_line(err)
    # another model of the same architecture runs it, with a warning to rebuild for speed
    assert read_plan(path, api, FakeDevice("Orin", "8.7")) == path.read_bytes()
    assert "tuned on NVIDIA Fake GPU, this is Orin" in caplog.text


def test_damaged_engine_is_caught_by_its_checksum(tmp_path, api, device):
    path = built(tmp_path, api, device)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(StreamrecError, match="is damaged") as err:
        read_plan(path, api, device)
    one_line(err)


def test_engine_without_record_that_tensorrt_refuses_is_one_line(tmp_path, api, device):
    path = tmp_path / "downloaded.engine"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(StreamrecError) as err:
        TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES, source=f"engine {path}")
    assert "cannot load engine" in one_line(err) and "magicTag" in one_line(err)


def test_missing_engine_file(tmp_path, api, device):
    with pytest.raises(StreamrecError, match="not found; build one"):
        read_plan(tmp_path / "nope.engine", api, device)


def test_missing_tensorrt_asked_for_explicitly_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    config = load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.device=cuda"])
    with pytest.raises(StreamrecError, match="TensorRT is not installed") as err:
        create_engine(config)
    one_line(err)


def test_missing_cuda_bindings_is_one_line(monkeypatch):
    from streamrec.backends.cuda_memory import open_device

    for module in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StreamrecError, match="needs pycuda or cuda-python"):
        open_device(0)


def test_tensorrt_backend_refuses_the_cpu():
    with pytest.raises(StreamrecError, match="runs on a CUDA GPU"):
        create_engine(load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.device=cpu"]))


# --------------------------------------------------------------------------- through create_engine


def test_run_path_exports_builds_once_and_reuses(monkeypatch, api, device, engine_dir):
    """No --engine: the config is exported to ONNX and built into engines/; the next run reuses both."""
    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: device)
    config = load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.device=cuda", "pipeline.max_batch=3"])
    engine = create_engine(config)
    assert engine.name == "tensorrt" and engine.max_batch == 3 and engine.device == "cuda:0"
    assert len(list(engine_dir.glob("slowfast-tiny.fp32.*.onnx"))) == 1
    assert len(list(engine_dir.glob("slowfast-tiny.fp32.*.fp32.b1-3-3.*.engine"))) == 1
    batch = {"slow": np.zeros((2, 4, 96, 96, 3), np.uint8), "fast": np.full((2, 16, 96, 96, 3), 50, np.uint8)}
    np.testing.assert_allclose(engine.infer(batch), fake_network(batch, 7), rtol=1e-6)

    create_engine(config)
    assert api.builds == 1
    assert create_engine(config.replace(engine=dataclasses.replace(config.engine, device="cuda:1"))).device == "cuda:1"


def test_int8_without_a_quantized_graph_says_how(monkeypatch, api, device):
    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: device)
    config = load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.precision=int8"])
    with pytest.raises(StreamrecError, match="build-engine --onnx FILE --precision int8 --calibration DIR"):
        create_engine(config)


def test_engine_file_is_used_as_given(tmp_path, monkeypatch, api, device):
    path = built(tmp_path, api, device)
    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: device)
    config = load_config("slowfast_tiny", ["engine.backend=auto", f"engine.engine_file={path}"])
    with pytest.raises(StreamrecError, match=r"input 'slow' is uint8 \[4, 2, 8, 8, 3\]; the config needs"):
        create_engine(config)


# --------------------------------------------------------------------------- the build-engine command


def test_build_engine_command_builds_then_reuses(tmp_path, monkeypatch, capsys, api, device, engine_dir):
    from streamrec.cli import main as cli_main

    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: device)
    onnx_file = contract_onnx(tmp_path / "model.onnx")
    assert cli_main(["build-engine", "--onnx", str(onnx_file), "--batch", "1:2:4"]) == 0
    out = capsys.readouterr().out
    (engine,) = engine_dir.glob("model.fp32.b1-2-4.*.engine")
    assert "Building engine ..." in out and f"built {engine} in" in out and f"--engine {engine}" in out
    assert cli_main(["build-engine", "--onnx", str(onnx_file), "--batch", "1:2:4"]) == 0
    assert f"reusing the TensorRT engine {engine}" in capsys.readouterr().out and api.builds == 1
    assert cli_main(["build-engine", "--onnx", str(onnx_file), "--batch", "1:2:4", "--rebuild"]) == 0
    assert api.builds == 2

    assert cli_main(["build-engine", "--onnx", str(onnx_file), "--precision", "int8"]) == 2
    assert "has no Q/DQ nodes; int8 needs calibration videos: add --calibration DIR" in capsys.readouterr().err


def test_build_engine_runs_from_a_run_without_a_progress_monitor(monkeypatch, api, device):
    """A build a run makes in passing has no Python progress monitor (its callbacks would take
    the GIL from the builder's threads); build-engine, which a person watches, has one."""
    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: device)
    create_engine(load_config("slowfast_tiny", ["engine.backend=tensorrt", "pipeline.max_batch=2"]))
    assert api.builds == 1 and api.monitored_builds == 0


# --------------------------------------------------------------------------- TensorRT's answers, checked


def test_fp32_builds_turn_tf32_off_and_fp16_builds_keep_it(tmp_path, api, device):
    built(tmp_path, api, device)
    build_engine(contract_onnx(tmp_path / "half.onnx", half=True), "fp16", BatchProfile(1, 4, 4), api, device,
                 progress=quiet)
    assert api.build_tf32 == [False, True]


def test_a_build_without_a_timing_cache_writes_none(tmp_path, api, device, engine_dir):
    api.keep_timing_cache = False
    assert built(tmp_path, api, device).is_file()
    assert not list(engine_dir.glob("timing.*"))


def test_a_refused_input_shape_is_one_line_with_tensorrt_s_reason(tmp_path, api, device):
    engine = TensorRTEngine(read_plan(built(tmp_path, api, device), api, device), api, device, SPECS, CLASSES)
    api.engines[-1].refuse_shapes = True
    with pytest.raises(StreamrecError) as err:
        engine.infer(clips(2))
    assert "TensorRT refused input 'slow' of shape [2, 2, 8, 8, 3]" in one_line(err)
    assert "Static dimension mismatch" in one_line(err)


def test_a_refused_tensor_address_stops_the_engine_and_frees_what_it_allocated(tmp_path):
    device = FakeDevice(misaligned=True)
    api = FakeTensorRT(device)
    path = built(tmp_path, api, device)
    with pytest.raises(StreamrecError) as err:
        TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)
    assert "TensorRT refused the device address of 'slow'" in one_line(err) and "256-byte aligned" in one_line(err)
    assert device.closed and not device.buffers and not device.pinned_arrays


def test_a_failed_contract_check_frees_the_engine_s_memory(tmp_path, api, device):
    path = built(tmp_path, api, device, classes=7)
    with pytest.raises(StreamrecError, match="5 classes"):
        TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)
    assert device.closed and not device.streams


def test_a_failed_execution_is_one_line_with_its_own_reason(tmp_path, api, device):
    engine = TensorRTEngine(read_plan(built(tmp_path, api, device), api, device), api, device, SPECS, CLASSES)
    context = api.engines[-1].contexts[-1]
    context.fail_next_execution = "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (an illegal memory access)"
    with pytest.raises(StreamrecError) as err:
        engine.infer(clips(2))
    assert "TensorRT refused to run a batch of 2" in one_line(err) and "illegal memory access" in one_line(err)
    assert api.errors == []  # taken with the failure
    np.testing.assert_allclose(engine.infer(clips(2, seed=1)), fake_network(clips(2, seed=1)), rtol=1e-6)

    api.errors.append("an error an earlier call reported, and was logged then")
    context.fail_next_execution = ""  # a refusal without a reason of its own
    with pytest.raises(StreamrecError) as err:
        engine.infer(clips(2))
    assert "it gave no reason" in one_line(err) and "earlier" not in one_line(err)


@pytest.mark.parametrize("where", ["input", "output"])
def test_tensors_numpy_cannot_hold_are_one_line(tmp_path, device, where):
    api = FakeTensorRT(device, **{f"{where}_dtype": "BF16"})
    path = built(tmp_path, api, device)
    with pytest.raises(StreamrecError) as err:
        TensorRTEngine(read_plan(path, api, device), api, device, SPECS, CLASSES)
    name = "slow" if where == "input" else "logits"
    assert f"engine {where} '{name}' is BF16, which numpy cannot hold" in one_line(err)


def test_the_stream_is_synchronized_before_the_logits_are_read(tmp_path, api, device):
    """Copies and execution run only when the stream is synchronized (as on a GPU): without that
    wait the logits would be whatever the pinned buffer held before."""
    engine = TensorRTEngine(read_plan(built(tmp_path, api, device), api, device), api, device, SPECS, CLASSES)
    for call in range(1, 4):
        batch = clips(call, seed=call)
        np.testing.assert_allclose(engine.infer(batch), fake_network(batch), rtol=1e-6)
        assert device.synchronized == call and not any(s.queued for s in device.streams.values())


def test_calls_from_another_thread_activate_the_context_themselves(tmp_path, api, device):
    engine = TensorRTEngine(read_plan(built(tmp_path, api, device), api, device), api, device, SPECS, CLASSES)
    results: list = []

    def worker() -> None:
        try:
            results.append(engine.infer(clips(3, seed=5)))
        except Exception as err:  # surfaced below
            results.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert not isinstance(results[0], Exception), results[0]
    np.testing.assert_allclose(results[0], fake_network(clips(3, seed=5)), rtol=1e-6)


def test_the_device_stand_in_refuses_memory_calls_without_a_current_context(device):
    with pytest.raises(RuntimeError, match="no currently active context"):
        device.pinned((4,), np.uint8)
    with device.activate():
        device.pinned((4,), np.uint8)
    seen: list = []
    with device.activate():  # current on this thread only
        thread = threading.Thread(target=lambda: seen.append(device.active))
        thread.start()
        thread.join(10)
    assert seen == [False]


# --------------------------------------------------------------------------- RealTensorRT on a stand-in `tensorrt`


class Severity(enum.IntEnum):  # INFO is the largest, as in TensorRT: "severity > min" means "less severe"
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INVALID_ARGUMENT = 3
    INVALID_STATE = 9
    FAILED_EXECUTION = 6


def fake_trt_module(gpu: str = "sm87", version: str = "10.3.0") -> types.SimpleNamespace:
    """The slice of the ``tensorrt`` module `RealTensorRT` touches, behaving as TensorRT 10.3-11.x
    does where it matters here (see the module docstring). ``trt.sent_to_python`` counts the
    messages that entered Python through a Python ``ILogger``; ``trt.printed`` what TensorRT's
    own Logger printed; ``trt.builds`` each build's config as it was at the build."""
    trt = types.SimpleNamespace(__version__=version, sent_to_python=0, printed=[], builds=[], plugins=False)

    def init_libnvinfer_plugins(logger, namespace: str) -> bool:
        trt.plugins = True  # NVIDIA's plugins (ROIAlign_TRT among them) are in the registry from now on
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 FP8 BF16 INT64 INT4 FP4")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "TF32 SPARSE_WEIGHTS REFIT")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", "LAYER_NAMES_ONLY NONE DETAILED")
    trt.LayerInformationFormat = enum.Enum("LayerInformationFormat", "ONELINE JSON")
    # 10.x: EXPLICIT_BATCH 0, STRONGLY_TYPED 1; 11.x: STRONGLY_TYPED 0, deprecated and always on
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1 if version.startswith("10.") else 0)
    trt.ErrorCode = ErrorCode

    def nptype(dtype):
        mapping = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
                   trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64, trt.DataType.BOOL: np.bool_,
                   trt.DataType.UINT8: np.uint8}
        if dtype in mapping:
            return mapping[dtype]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    trt.nptype = nptype

    class ILogger:
        Severity = Severity

        def __init__(self) -> None:
            pass

    class Logger(ILogger):  # TensorRT's own: filters in C++, prints what passes
        WARNING = Severity.WARNING

        def __init__(self, min_severity=Severity.WARNING) -> None:
            self.min_severity = min_severity

    def emit(logger, severity: Severity, message: str) -> None:
        if type(logger) is Logger:
            if severity <= logger.min_severity:
                trt.printed.append((severity, message))
        else:  # a Python subclass: every message crosses into Python, and takes the GIL
            trt.sent_to_python += 1
            logger.log(severity, message)

    def report(owner, logger, code: ErrorCode, message: str) -> None:
        if owner.error_recorder is not None:  # with a recorder set, errors go there instead of the log
            owner.error_recorder.report_error(code, message)
        else:
            emit(logger, Severity.ERROR, message)

    class IErrorRecorder:
        def __init__(self) -> None:
            pass

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class HostMemory:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __bytes__(self) -> bytes:
            return self.data

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.gpu, _, entries = data.decode().partition("|") if data else (gpu, "", "")
            self.entries = [e for e in entries.split(",") if e]

        def serialize(self) -> HostMemory:
            return HostMemory(f"{self.gpu}|{','.join(self.entries)}".encode())

    class Config:
        def __init__(self) -> None:
            self.flags = {trt.BuilderFlag.TF32}  # "Enabled by default"
            self.pools: dict = {}
            self.profiles: list = []
            self.timing_cache = None
            self.progress_monitor = None
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY

        def clear_flag(self, flag) -> None:
            self.flags.discard(flag)

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def get_flag(self, flag) -> bool:
            return flag in self.flags

        def set_memory_pool_limit(self, pool, size: int) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache | None:
            try:
                return TimingCache(bytes(data))
            except UnicodeDecodeError:
                return None  # createTimingCache's null pointer: a blob it cannot read

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            if cache.gpu != trt.gpu and not ignore_mismatch:
                return False  # "A failure will be reported if the CUDA device property ... is different"
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache  # None "if no timing cache is set"

    trt.gpu = gpu

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict = {}

        def set_shape(self, name, low, opt, high) -> None:
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Tensor:
        def __init__(self, name: str, shape) -> None:
            self.name, self.shape = name, tuple(shape)

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.fails_to_build = False

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

    class ParserError:
        def __init__(self, node: str, operator: str, description: str) -> None:
            self._node, self._operator, self._description = node, operator, description

        def node_name(self) -> str:
            return self._node

        def node_operator(self) -> str:
            return self._operator

        def desc(self) -> str:
            return self._description

    class OnnxParser:
        """Reads a JSON stand-in of a graph: {"inputs": {name: shape}, "unsupported": [node], "fails": bool,
        "roi_align": bool}. RoiAlign imports as the ROIAlign_TRT plugin, found only once the plugin
        library is registered, as onnx-tensorrt's importer does."""

        def __init__(self, network: Network, logger) -> None:
            self.network, self.errors = network, []

        def parse(self, model: bytes) -> bool:
            graph = json.loads(model)
            self.errors = [ParserError(node, "Unsupported", "No importer registered for op: Unsupported")
                           for node in graph.get("unsupported", [])]
            if graph.get("roi_align") and not trt.plugins:
                self.errors.append(ParserError("RoiAlign_0", "RoiAlign", "Plugin not found, are the plugin name, "
                                               "version, and namespace correct?"))
            self.network.uses_plugins = bool(graph.get("roi_align"))
            self.network.inputs = [Tensor(name, shape) for name, shape in graph["inputs"].items()]
            self.network.fails_to_build = graph.get("fails", False)
            return not self.errors

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class Inspector:
        def __init__(self, engine) -> None:
            self.engine = engine

        def get_engine_information(self, fmt) -> str:
            assert fmt == trt.LayerInformationFormat.JSON
            if self.engine.verbosity != trt.ProfilingVerbosity.DETAILED.name:
                return json.dumps({"Layers": ["conv1", "conv2"], "Bindings": []})
            def tensor(name: str, dtype: str) -> dict:  # TensorRT 11 changed the inspector's schema
                if version.startswith("10."):
                    return {"Name": name, "Format/Datatype": f"Row major linear {dtype}"}
                return {"Name": name, "Format": "Row major linear", "Datatype": dtype}

            layers = [{"Name": f"conv{i}", "Inputs": [tensor(f"t{i}", dtype)], "Outputs": [tensor(f"t{i + 1}", dtype)]}
                      for i, dtype in enumerate(self.engine.layer_dtypes)]
            return json.dumps({"Layers": layers, "Bindings": []})

    class Engine:
        def __init__(self, header: dict) -> None:
            self.verbosity = header["verbosity"]
            self.layer_dtypes = header["layer_dtypes"]

        def create_engine_inspector(self) -> Inspector:
            return Inspector(self)

    class Builder:
        def __init__(self, logger) -> None:
            self.logger, self.error_recorder = logger, None

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config):
            for index in range(300):
                emit(self.logger, Severity.VERBOSE, f"tactic {index} timed")
            emit(self.logger, Severity.INFO, "Detected 1 inputs and 1 output network tensors.")
            emit(self.logger, Severity.WARNING, "Profile kMIN values are not self-consistent (harmless here)")
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Timing tactics", "Building engine", 300)
                for step in range(300):
                    monitor.step_complete("Timing tactics", step)
                monitor.phase_finish("Timing tactics")
                monitor.step_complete("Building engine", 0)
                monitor.step_complete("Building engine", 1)
                monitor.phase_finish("Building engine")
            trt.builds.append({"flags": set(config.flags), "network_flags": network.flags,
                               "profiles": [p.shapes for p in config.profiles], "pools": dict(config.pools),
                               "monitor": monitor is not None, "verbosity": config.profiling_verbosity})
            if network.fails_to_build:
                report(self, self.logger, ErrorCode.INVALID_STATE, "Error Code 9: API Usage Error (no tactic fits)")
                return None
            if config.timing_cache is not None:
                config.timing_cache.entries.append(f"build{len(trt.builds)}")
            plan = {"magic": PLAN_MAGIC, "verbosity": config.profiling_verbosity.name, "layer_dtypes": ["Float"] * 3,
                    "plugins": getattr(network, "uses_plugins", False)}
            return HostMemory(json.dumps(plan).encode())

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger, self.error_recorder = logger, None

        def deserialize_cuda_engine(self, plan: bytes):
            try:
                header = json.loads(plan)
                assert header["magic"] == PLAN_MAGIC
            except (ValueError, AssertionError, KeyError, TypeError):
                report(self, self.logger, ErrorCode.INVALID_ARGUMENT,
                       "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magicTag failed)")
                report(self, self.logger, ErrorCode.INVALID_STATE, "Error Code 4: engine plan file is corrupted")
                return None
            if header.get("plugins") and not trt.plugins:
                report(self, self.logger, ErrorCode.INVALID_ARGUMENT,
                       "getPluginCreator could not find plugin: ROIAlign_TRT version: 1")
                return None
            return Engine(header)

    trt.ILogger, trt.Logger, trt.IErrorRecorder, trt.IProgressMonitor = ILogger, Logger, IErrorRecorder, IProgressMonitor
    trt.Builder, trt.Runtime, trt.OnnxParser = Builder, Runtime, OnnxParser
    return trt


def graph_json(**inputs) -> bytes:
    return json.dumps({"inputs": inputs or {"slow": [-1, 2, 8, 8, 3]}}).encode()


def fixed_profile(name, shape):
    return tuple((size, *shape[1:]) for size in (1, 4, 4))


def real_api(**kwargs):
    from streamrec.backends.trt_api import RealTensorRT

    trt = fake_trt_module(**kwargs)
    return RealTensorRT(trt), trt


def test_real_build_sets_what_the_graph_cannot_say(monkeypatch):
    api, trt = real_api()
    result = api.build(graph_json(), fixed_profile, 256 * 2**20, None, None, tf32=False)
    (config,) = trt.builds
    assert config["network_flags"] == 1 << 1  # 1 << STRONGLY_TYPED, 1 in TensorRT 10
    assert config["profiles"] == [{"slow": ((1, 2, 8, 8, 3), (4, 2, 8, 8, 3), (4, 2, 8, 8, 3))}]
    assert config["pools"] == {trt.MemoryPoolType.WORKSPACE: 256 * 2**20}
    assert trt.BuilderFlag.TF32 not in config["flags"]  # on by default: an fp32 engine would compute in TF32
    assert json.loads(result.plan)["magic"] == PLAN_MAGIC
    api.build(graph_json(), fixed_profile, None, None, None, tf32=True)
    assert trt.BuilderFlag.TF32 in trt.builds[1]["flags"]


def test_real_build_on_tensorrt_11_asks_for_its_strongly_typed_flag():
    api, trt = real_api(version="11.1.0")
    api.build(graph_json(), fixed_profile, None, None, None, tf32=False)
    assert trt.builds[0]["network_flags"] == 1 << 0  # STRONGLY_TYPED is 0 in TensorRT 11 (deprecated, always on)


def test_real_build_filters_messages_before_python_and_monitors_only_when_asked():
    api, trt = real_api()
    api.build(graph_json(), fixed_profile, None, None, None, tf32=True)
    assert trt.sent_to_python == 0  # TensorRT's own Logger dropped 301 VERBOSE and INFO lines in C++
    assert [m for _, m in trt.printed] == ["Profile kMIN values are not self-consistent (harmless here)"]
    assert trt.builds[0]["monitor"] is False

    lines: list[str] = []
    api.build(graph_json(), fixed_profile, None, None, lines.append, tf32=True)
    assert trt.builds[1]["monitor"] is True
    assert lines == ["Building engine ...", "Building engine: step 1/2", "Building engine: step 2/2"]


def test_real_build_replaces_a_refused_timing_cache_instead_of_crashing(caplog):
    api, trt = real_api(gpu="sm87")
    first = api.build(graph_json(), fixed_profile, None, None, None, tf32=True)
    assert first.timing_cache == b"sm87|build1"
    again = api.build(graph_json(), fixed_profile, None, first.timing_cache, None, tf32=True)
    assert again.timing_cache == b"sm87|build1,build2"  # the saved timings were used and extended

    foreign = api.build(graph_json(), fixed_profile, None, b"sm90|h100-timings", None, tf32=True)
    assert foreign.timing_cache == b"sm87|build3"  # a new cache: another GPU's timings are never used
    assert "refused the saved timing cache" in caplog.text

    caplog.clear()
    damaged = api.build(graph_json(), fixed_profile, None, b"\xff\xfe not a cache", None, tf32=True)
    assert damaged.timing_cache == b"sm87|build4"  # TensorRT could not read it: built with a new one
    assert "refused the saved timing cache (damaged" in caplog.text


def test_real_build_failure_carries_the_reported_error(caplog):
    api, trt = real_api()
    with pytest.raises(TensorRTError, match="no tactic fits") as err:
        api.build(json.dumps({"inputs": {"slow": [-1, 2, 8, 8, 3]}, "fails": True}).encode(), fixed_profile,
                  None, None, None, tf32=True)
    assert err.value.messages == ["Error Code 9: API Usage Error (no tactic fits)"]
    assert "TensorRT error (INVALID_STATE): Error Code 9" in caplog.text  # logged when it came
    with pytest.raises(OnnxParseError) as parse:
        api.build(json.dumps({"inputs": {}, "unsupported": ["custom_layer_7"]}).encode(), fixed_profile, None,
                  None, None, tf32=True)
    assert parse.value.issues[0].node_name == "custom_layer_7"


def test_real_deserialize_errors_are_logged_kept_per_call_and_bounded(caplog):
    api, trt = real_api()
    for _ in range(2):
        with pytest.raises(TensorRTError) as err:
            api.deserialize(b"\x00garbage")
        assert len(err.value.messages) == 2 and "corrupted" in str(err.value)  # this call's, not the last one's too
    assert caplog.text.count("magicTag failed") == 2
    for index in range(KEPT_ERRORS + 5):  # errors a running context reports, with nobody asking
        api.errors.report_error(ErrorCode.FAILED_EXECUTION, f"error {index}")
    assert api.errors.has_overflowed() and api.errors.get_num_errors() == KEPT_ERRORS
    kept = api.take_errors()
    assert kept[0] == "error 5" and kept[-1] == f"error {KEPT_ERRORS + 4}"
    assert api.take_errors() == [] and api.errors.get_num_errors() == 0 and not api.errors.has_overflowed()
    assert api.deserialize(json.dumps({"magic": PLAN_MAGIC, "verbosity": "DETAILED",
                                       "layer_dtypes": []}).encode()).verbosity == "DETAILED"


def test_a_plugin_library_tensorrt_could_not_register_is_said(caplog):
    trt = fake_trt_module()
    trt.init_libnvinfer_plugins = lambda logger, namespace: False
    from streamrec.backends.trt_api import RealTensorRT

    RealTensorRT(trt)
    assert "could not register NVIDIA's plugin library" in caplog.text


def test_real_numpy_types_and_the_ones_numpy_lacks():
    api, trt = real_api()
    assert api.numpy_dtype(trt.DataType.UINT8) == np.uint8 and api.numpy_dtype(trt.DataType.HALF) == np.float16
    assert api.numpy_dtype(trt.DataType.BF16) is None and api.numpy_dtype(trt.DataType.FP8) is None


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_real_layer_types_come_from_a_detailed_engine_inspector(version):
    api, trt = real_api(version=version)
    plan = api.build(graph_json(), fixed_profile, None, None, None, tf32=False).plan
    assert trt.builds[0]["verbosity"] == trt.ProfilingVerbosity.DETAILED  # else the inspector gives names only
    assert api.layer_types(api.deserialize(plan)) == collections.Counter({"Row major linear Float": 6})
    names_only = api.deserialize(json.dumps({"magic": PLAN_MAGIC, "verbosity": "LAYER_NAMES_ONLY",
                                             "layer_dtypes": []}).encode())
    assert api.layer_types(names_only) == collections.Counter()


# --------------------------------------------------------------------------- CUDA memory on stand-in pycuda and cuda-python


def fake_pycuda(devices: int = 1, init_error: str | None = None) -> types.ModuleType:
    """``pycuda.driver``: contexts are current per thread; memory calls without one raise pycuda's
    LogicError; copies are queued on the stream and run when it is synchronized."""
    cuda = types.ModuleType("pycuda.driver")
    local = threading.local()
    memory: dict[int, bytearray] = {}

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def stack() -> list:
        if not hasattr(local, "stack"):
            local.stack = []
        return local.stack

    def need(call: str) -> None:
        if not stack():
            raise LogicError(f"{call} failed: {NO_CONTEXT}")

    def init() -> None:
        if init_error:
            raise Error(f"cuInit failed: {init_error}")

    class Context:
        def push(self) -> None:
            stack().append(self)

        @staticmethod
        def pop() -> None:
            stack().pop()

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return devices

        def name(self) -> str:
            return "NVIDIA Fake GPU"

        def compute_capability(self) -> tuple[int, int]:
            return 8, 7

        def retain_primary_context(self) -> Context:
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            need("mem_alloc")
            self.address = 0x1000 * (len(memory) + 1)
            memory[self.address] = bytearray(nbytes)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            need("mem_free")
            memory.pop(self.address)

    class Stream:
        def __init__(self) -> None:
            need("Stream")
            self.handle = 0x5000 + id(self) % 0x1000
            self.queued: list = []

        def synchronize(self) -> None:
            need("cuStreamSynchronize")
            while self.queued:
                self.queued.pop(0)()

    def pagelocked_empty(shape, dtype) -> np.ndarray:
        need("pagelocked_empty")
        return np.zeros(shape, dtype)

    def memcpy_htod_async(dest, src, stream) -> None:
        need("memcpy_htod_async")
        stream.queued.append(lambda: memory[int(dest)].__setitem__(slice(0, src.nbytes), src.tobytes()))

    def memcpy_dtoh_async(dest, src, stream) -> None:
        need("memcpy_dtoh_async")
        stream.queued.append(lambda: dest.reshape(-1).view(np.uint8).__setitem__(
            slice(None), np.frombuffer(memory[int(src)][: dest.nbytes], np.uint8)))

    cuda.Error, cuda.LogicError, cuda.init, cuda.Context, cuda.Device = Error, LogicError, init, Context, Device
    cuda.mem_alloc, cuda.Stream, cuda.pagelocked_empty = DeviceAllocation, Stream, pagelocked_empty
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async, cuda.memory = memcpy_htod_async, memcpy_dtoh_async, memory
    return cuda


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400


def fake_cudart(devices: int = 2, driver_cuda: int = 12060, built_for: int = 12,
                device_bytes: int = 1 << 30) -> types.SimpleNamespace:
    """``cuda.bindings.runtime``: ``(error, value)`` results; the current device is per thread (0
    until ``cudaSetDevice``) and a stream works only from a thread whose current device is its
    own; built for a CUDA newer than the driver's, every call but ``cudaDriverGetVersion``
    answers ``cudaErrorInsufficientDriver``; ``int(stream)`` warns, as in cuda-python 13."""
    rt = types.SimpleNamespace(cudaError_t=CudaError)
    rt.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})
    usable = driver_cuda // 1000 >= built_for
    local = threading.local()
    host: dict[int, ctypes.Array] = {}
    memory: dict[int, tuple[int, bytearray]] = {}

    class cudaStream_t:
        def __init__(self, device: int) -> None:
            self.native, self.device, self.queued = 0x9000 + 16 * len(rt.streams), device, []

        def __int__(self) -> int:
            warnings.warn("int(cuda_obj) is deprecated; use get_cuda_native_handle", DeprecationWarning)
            return self.native

    rt.streams = {}
    rt.get_cuda_native_handle = lambda stream: stream.native

    def current() -> int:
        return getattr(local, "device", 0)

    def ok(*values):
        return (CudaError.cudaSuccess, *values) if usable else (CudaError.cudaErrorInsufficientDriver,
                                                                 *([None] * len(values)))

    def stream_of(stream):
        found = rt.streams.get(stream.native if isinstance(stream, cudaStream_t) else stream)
        return found if found is not None and found.device == current() else None

    def set_device(index: int):
        if usable and 0 <= index < devices:
            local.device = index
        return ok() if index < devices else (CudaError.cudaErrorInvalidValue,)

    def malloc(nbytes: int):
        if usable and nbytes > device_bytes:
            return CudaError.cudaErrorMemoryAllocation, 0
        address = 0x100000 * (len(memory) + 1)
        memory[address] = (current(), bytearray(nbytes))
        return ok(address)

    def malloc_host(nbytes: int):
        block = ctypes.create_string_buffer(nbytes)
        host[ctypes.addressof(block)] = block
        return ok(ctypes.addressof(block))

    def stream_create():
        stream = cudaStream_t(current())
        rt.streams[stream.native] = stream
        return ok(stream)

    def memcpy_async(dst, src, count, kind, stream):
        found = stream_of(stream)
        if usable and found is None:
            return (CudaError.cudaErrorInvalidResourceHandle,)
        if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            found.queued.append(lambda: memory[dst][1].__setitem__(slice(0, count), ctypes.string_at(src, count)))
        else:
            found.queued.append(lambda: ctypes.memmove(dst, bytes(memory[src][1][:count]), count))
        return ok()

    def synchronize(stream):
        found = stream_of(stream)
        if usable and found is None:
            return (CudaError.cudaErrorInvalidResourceHandle,)
        while found.queued:
            found.queued.pop(0)()
        return ok()

    rt.cudaGetDeviceCount = lambda: ok(devices) if usable else (CudaError.cudaErrorInsufficientDriver, 0)
    rt.cudaSetDevice = set_device
    rt.cudaGetDeviceProperties = lambda index: ok(types.SimpleNamespace(name=b"NVIDIA Fake GPU\x00\x00", major=8,
                                                                        minor=7))
    rt.cudaMalloc, rt.cudaMallocHost, rt.cudaStreamCreate = malloc, malloc_host, stream_create
    rt.cudaMemcpyAsync, rt.cudaStreamSynchronize = memcpy_async, synchronize
    rt.cudaFree = lambda address: ok() if memory.pop(address, None) else (CudaError.cudaErrorInvalidValue,)
    rt.cudaFreeHost = lambda address: ok() if host.pop(address, None) is not None else (CudaError.cudaErrorInvalidValue,)
    rt.cudaStreamDestroy = lambda stream: ok() if rt.streams.pop(stream.native, None) else (CudaError.cudaErrorInvalidValue,)
    rt.cudaGetErrorName = lambda error: (CudaError.cudaSuccess, error.name.encode())
    rt.cudaGetErrorString = lambda error: (CudaError.cudaSuccess, {
        CudaError.cudaErrorMemoryAllocation: b"out of memory",
        CudaError.cudaErrorInvalidResourceHandle: b"invalid resource handle",
        CudaError.cudaErrorInsufficientDriver: b"CUDA driver version is insufficient for CUDA runtime version",
    }.get(error, b"invalid argument"))
    rt.cudaDriverGetVersion = lambda: (CudaError.cudaSuccess, driver_cuda)
    rt.memory = memory
    return rt


@pytest.fixture
def with_cudart(monkeypatch):
    """Install a stand-in cuda-python (and no pycuda); returns a function making one."""
    import streamrec.backends.cuda_memory as cuda_memory

    for module in ("pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, module, None)

    def install(**kwargs) -> types.SimpleNamespace:
        rt = fake_cudart(**kwargs)
        monkeypatch.setattr(cuda_memory, "_import_cudart", lambda: rt)
        monkeypatch.setattr(cuda_memory, "_native_handle_getter", lambda: rt.get_cuda_native_handle)
        monkeypatch.setattr(cuda_memory, "cuda_python_version", lambda: f"{kwargs.get('built_for', 12)}.0.3")
        return rt

    return install


@pytest.fixture
def with_pycuda(monkeypatch):
    def install(**kwargs) -> types.ModuleType:
        cuda = fake_pycuda(**kwargs)
        package = types.ModuleType("pycuda")
        package.driver = cuda
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        return cuda

    return install


def round_trip_from_a_worker(memory) -> list:
    """What the TensorRT engine does with its memory: buffers made on the thread that opens the
    engine, copies and a wait on a worker thread (the pipeline's). Returns the worker's errors."""
    with memory.activate():
        stream = memory.stream()
        source = memory.pinned((3, 16), np.uint8)
        back = memory.pinned((3, 16), np.uint8)
        address = memory.allocate(source.nbytes)
    source[:] = np.arange(48, dtype=np.uint8).reshape(3, 16)
    errors: list = []

    def worker() -> None:
        try:
            with memory.activate():
                memory.to_device(address, source, stream)
                memory.to_host(back, address, stream)
                assert not back.any(), "the copy back landed before the stream was synchronized"
                stream.synchronize()
            np.testing.assert_array_equal(back, source)
        except Exception as err:  # surfaced by the caller
            errors.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    memory.close()
    return errors


def test_cuda_python_memory_on_the_second_gpu_from_a_worker_thread(with_cudart):
    from streamrec.backends.cuda_memory import CudaPythonMemory, open_device

    rt = with_cudart(devices=2)
    memory = open_device(1)
    assert isinstance(memory, CudaPythonMemory) and (memory.device_name, memory.compute_capability) == \
        ("NVIDIA Fake GPU", "8.7")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # int(stream) is deprecated in cuda-python 13
        assert round_trip_from_a_worker(memory) == []
    assert not rt.memory and not rt.streams  # close freed what it made


def test_cuda_python_calls_off_the_gpu_s_thread_state_are_one_line(with_cudart):
    from streamrec.backends.cuda_memory import open_device

    with_cudart(devices=2)
    memory = open_device(1)
    with memory.activate():
        stream = memory.stream()
        address = memory.allocate(16)
    host = np.zeros(16, np.uint8)
    outcome: list = []

    def worker() -> None:  # no activate(): this thread's current device is still 0
        try:
            memory.to_device(address, host, stream)
        except StreamrecError as err:
            outcome.append(str(err))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert outcome == ["CUDA error cudaErrorInvalidResourceHandle (400) in cudaMemcpyAsync on GPU 1: invalid "
                       "resource handle"]
    with memory.activate(), pytest.raises(StreamrecError) as err:
        memory.allocate(1 << 31)
    assert one_line(err) == "CUDA error cudaErrorMemoryAllocation (2) in cudaMalloc on GPU 1: out of memory"


def test_cuda_python_too_new_for_the_driver_says_what_to_install(with_cudart, monkeypatch, caplog, api):
    """cuda-python 13 on a CUDA 12 driver (JetPack 6): every call answers
    cudaErrorInsufficientDriver. auto passes TensorRT over and says why; asking for it is one line."""
    import importlib.util

    from streamrec.backends import resolve_backend
    from streamrec.backends.cuda_memory import gpu_count, open_device

    with_cudart(driver_cuda=12060, built_for=13)
    fix = "`pip install 'cuda-python>=12,<13'`"
    with caplog.at_level(logging.WARNING):
        assert gpu_count() == 0
    assert "cuda-python 13.0.3 needs a newer NVIDIA driver than this one, which runs CUDA 12.6" in caplog.text
    assert fix in caplog.text
    with pytest.raises(StreamrecError) as err:
        open_device(0)
    assert "CUDA cannot start (cudaGetDeviceCount)" in one_line(err) and fix in one_line(err)

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else
                        find_spec(name, *a))
    assert resolve_backend(load_config("slowfast_tiny", ["engine.backend=auto"])) == "onnxruntime"
    monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: api)
    with pytest.raises(StreamrecError) as err:
        create_engine(load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.device=cuda"]))
    assert fix in one_line(err)


def test_pycuda_memory_needs_the_context_and_works_from_a_worker_thread(with_pycuda):
    from streamrec.backends.cuda_memory import PyCudaMemory, open_device

    cuda = with_pycuda()
    memory = open_device(0)
    assert isinstance(memory, PyCudaMemory)
    with pytest.raises(cuda.LogicError, match="no currently active context"):
        memory.pinned((4,), np.uint8)  # pycuda's page-locked memory belongs to the current context
    assert round_trip_from_a_worker(memory) == []
    assert not cuda.memory


def test_pycuda_that_cannot_start_is_one_line(with_pycuda):
    from streamrec.backends.cuda_memory import open_device

    with_pycuda(init_error="no CUDA-capable device is detected")
    with pytest.raises(StreamrecError) as err:
        open_device(0)
    assert one_line(err) == "pycuda cannot open CUDA GPU 0: cuInit failed: no CUDA-capable device is detected"
    with_pycuda(devices=1)
    with pytest.raises(StreamrecError, match="no CUDA GPU 1: pycuda sees 1"):
        open_device(1)


def test_the_plugin_library_is_registered_before_a_graph_with_roi_align_is_parsed_or_loaded():
    """The per-person heads' RoiAlign becomes TensorRT's ROIAlign_TRT plugin: without
    init_libnvinfer_plugins the parser cannot import it and a built engine holding it cannot load."""
    api, trt = real_api()
    assert trt.plugins  # registered as the API was made, before any parse or deserialize
    result = api.build(json.dumps({"inputs": {"fast": [-1, 8, 8, 8, 3]}, "roi_align": True}).encode(),
                       fixed_profile, None, None, None, tf32=False)
    trt.plugins = False  # as in a fresh process that never registered them
    with pytest.raises(TensorRTError, match="ROIAlign_TRT"):
        api.deserialize(result.plan)
    with pytest.raises(OnnxParseError, match="Plugin not found"):
        api.build(json.dumps({"inputs": {"fast": [-1, 8, 8, 8, 3]}, "roi_align": True}).encode(),
                  fixed_profile, None, None, None, tf32=False)


def test_an_roi_engines_profile_gives_boxes_their_own_range():
    """boxes [N, 5] ranges over person boxes, not clips: from one box to 16 a clip of the largest batch."""
    from streamrec.backends.engine_cache import BatchProfile
    from streamrec.backends.tensorrt_build import profile_shapes

    shapes = profile_shapes(BatchProfile(1, 4, 8))
    assert shapes("fast", (-1, 8, 96, 96, 3)) == ((1, 8, 96, 96, 3), (4, 8, 96, 96, 3), (8, 8, 96, 96, 3))
    assert shapes("boxes", (-1, 5)) == ((1, 5), (16, 5), (128, 5))
