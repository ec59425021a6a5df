"""The TensorRT backend's own logic, driven through a stand-in of `trt_api.TensorRT` and of
`cuda_memory.DeviceMemory` (TensorRT cannot be installed where these tests run).

The stand-in behaves as TensorRT does in every respect the backend relies on: dynamic axes
are -1 until ``set_input_shape``, shapes outside the profile are refused, outputs take their
shape from the inputs, execution reads and writes only device memory at the addresses set,
and a plan it did not write, or wrote for another version, fails to deserialise with logged
errors. Its "network" computes a known function of the inputs, so results are checked
exactly, through the whole path of pinned buffers, copies and addresses.
"""

from __future__ import annotations

import dataclasses
import json
import sys
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
from streamrec.backends.trt_api import BuildResult, OnnxParseError, ParserIssue, TensorRTError
from streamrec.config import load_config
from streamrec.errors import StreamrecError

SPECS = (InputSpec("slow", 2, 8), InputSpec("fast", 8, 8))
CLASSES = 5
PLAN_MAGIC = "fake-plan"
pytestmark = pytest.mark.usefixtures("engine_dir")  # every test gets an empty engine cache


# --------------------------------------------------------------------------- the stand-ins


class FakeStream:
    def __init__(self, memory: "FakeDevice", handle: int):
        self.memory, self.handle = memory, handle

    def synchronize(self) -> None:
        self.memory.synchronized += 1


class FakeDevice:
    """`DeviceMemory`: device allocations are byte arrays; an address is a key into them."""

    def __init__(self, name: str = "NVIDIA Fake GPU", capability: str = "8.7"):
        self.device_name, self.compute_capability = name, capability
        self.buffers: dict[int, bytearray] = {}
        self.pinned_arrays: list[np.ndarray] = []
        self.copies_to_device: list[tuple[np.dtype, int]] = []
        self.active = 0
        self.synchronized = 0
        self.closed = False

    @contextmanager
    def activate(self):
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def pinned(self, shape, dtype) -> np.ndarray:
        array = np.zeros(shape, dtype)
        self.pinned_arrays.append(array)
        return array

    def allocate(self, nbytes: int) -> int:
        address = 0x1000 * (len(self.buffers) + 1)
        self.buffers[address] = bytearray(nbytes)
        return address

    def stream(self) -> FakeStream:
        return FakeStream(self, 77)

    def to_device(self, address: int, host: np.ndarray, stream: FakeStream) -> None:
        assert self.active and host.flags.c_contiguous
        data = host.tobytes()
        assert len(data) <= len(self.buffers[address]), "copy overruns the device buffer"
        self.buffers[address][: len(data)] = data
        self.copies_to_device.append((host.dtype, host.nbytes))

    def to_host(self, host: np.ndarray, address: int, stream: FakeStream) -> None:
        assert self.active and host.flags.c_contiguous
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(self.buffers[address][: host.nbytes], np.uint8)

    def close(self) -> None:
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

    def set_input_shape(self, name, shape) -> bool:
        low, _, high = self.engine.profiles[name]
        if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
            return False  # TensorRT refuses shapes outside the profile
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name in self.engine.profiles:
            return self.shapes.get(name, self.engine.get_tensor_shape(name))
        batches = {s[0] for s in self.shapes.values()}
        return (batches.pop(), self.engine.classes) if len(self.shapes) == len(self.engine.profiles) and len(batches) == 1 else (-1, self.engine.classes)

    def set_tensor_address(self, name, memory) -> bool:
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle) -> bool:
        device = self.engine.device
        assert device.active and stream_handle == 77
        inputs = {}
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            inputs[name] = np.frombuffer(device.buffers[self.addresses[name]][:size], np.uint8).reshape(shape)
        logits = fake_network(inputs, self.engine.classes)
        output = device.buffers[self.addresses["logits"]]
        output[: logits.nbytes] = logits.tobytes()
        return True


class FakeEngine:
    def __init__(self, header: dict, device: FakeDevice):
        self.device = device
        self.profiles = {name: [tuple(s) for s in shapes] for name, shapes in header["profiles"].items()}
        self.dtypes = header["dtypes"]
        self.classes = header["classes"]
        self.names = [*self.profiles, "logits"]

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
        return FakeContext(self)


class FakeTensorRT:
    """`trt_api.TensorRT`: builds read the ONNX graph's inputs; plans are JSON it alone reads."""

    def __init__(self, device: FakeDevice, version: str = "10.3.0", input_dtype: str = "UINT8"):
        self.device = device
        self.version = version
        self.input_dtype = input_dtype
        self.builds = 0
        self.build_workspace: int | None = None

    def deserialize(self, plan: bytes):
        assert self.device.active
        try:
            header = json.loads(plan)
            assert header["magic"] == PLAN_MAGIC
        except (ValueError, AssertionError, KeyError, TypeError):
            raise TensorRTError(["IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                 "(Serialization assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)"])
        if header["version"] != self.version:
            raise TensorRTError([f"Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed. "
                                 f"Version tag does not match ({header['version']} vs {self.version})"])
        return FakeEngine(header, self.device)

    def is_input(self, mode) -> bool:
        return mode == "INPUT"

    def numpy_dtype(self, dtype) -> np.dtype:
        return np.dtype({"UINT8": np.uint8, "FLOAT": np.float32, "HALF": np.float16}[dtype])

    def build(self, onnx_bytes, profile, workspace_bytes, timing_cache, progress) -> BuildResult:
        assert self.device.active
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
        progress("Building engine ...")
        self.builds += 1
        self.build_workspace = workspace_bytes
        plan = {"magic": PLAN_MAGIC, "version": self.version, "profiles": profiles, "classes": classes,
                "dtypes": {name: self.input_dtype for name in profiles}}
        return BuildResult(json.dumps(plan).encode(), (timing_cache or b"") + b"+timings")


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
