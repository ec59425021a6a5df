"""Backends: parity between PyTorch and ONNX Runtime, batch-norm folding, backend choice,
the export cache, the no-torch run path, and one-line errors.

Model weights come from `test_export.random_model`, which makes logits that differ from clip
to clip (see there); parity on an untrained model would compare near-constants.
"""

from __future__ import annotations

import copy
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_runs_without_torch
from streamrec.backends import create_engine, resolve_backend
from streamrec.backends.engine_cache import export_path
from streamrec.backends.inputs import batch_size, input_specs
from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine, choose_providers
from streamrec.backends.torch_backend import TorchEngine, fold_batch_norms
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.export import export_config, export_onnx
from test_export import FP32_TOLERANCE, assert_meaningful, random_model, torch_logits, varied_clips

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("engine_dir")  # every test gets an empty engine cache


# --------------------------------------------------------------------------- parity


# R50 at a 112 px crop: the same layers as at 224 px at a quarter of the cost on a 2-core CI machine.
@pytest.mark.parametrize("name, count, overrides", [
    ("slowfast_tiny", 8, []),
    ("slowfast_r50_4x16", 2, ["clip.crop_size=112", "clip.short_side=128"]),
])
def test_torch_and_onnxruntime_agree(name, count, overrides, tmp_path):
    """The same uint8 clips through both engines: the same top-1, logits within float32 tolerance.

    The tolerance is 1e-4, or twice PyTorch's own float32 rounding error (measured against a
    float64 run of the same model) where that is larger: through R50's 50 layers float32
    itself is off by about 1.6e-4 on these logits, so no two float32 engines agree to 1e-4.
    """
    config = load_config(name, overrides)
    clips = varied_clips(config.clip, count)
    model = random_model(config, clips)
    specs = input_specs(config.clip)
    onnx_engine = OnnxRuntimeEngine(export_onnx(model, config.clip, tmp_path / f"{name}.onnx"), specs,
                                    config.model.num_classes, device="cpu", max_batch=count)
    torch_engine = TorchEngine(model, specs, torch.device("cpu"), max_batch=count)  # batch norms folded
    assert onnx_engine.device == torch_engine.device == "cpu"
    from_onnx, from_torch = onnx_engine.infer(clips), torch_engine.infer(clips)
    assert from_torch.std() > 0.5 and len(set(from_torch.argmax(1))) >= min(count, 3)

    exact = torch_logits(copy.deepcopy(model).double(), config.clip, clips)
    rounding = np.abs(torch_logits(model, config.clip, clips) - exact).max()
    assert np.abs(from_onnx - from_torch).max() <= max(FP32_TOLERANCE, 2 * rounding)
    assert (from_onnx.argmax(1) == from_torch.argmax(1)).all()


def test_folding_batch_norms_keeps_the_output_and_removes_them():
    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 4)
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)
    assert_meaningful(reference)
    probe = [torch.from_numpy(clips[name][:1]) for name in config.clip.input_names]
    folded = fold_batch_norms(model, probe)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) > 40  # the original is untouched
    assert np.abs(torch_logits(folded, config.clip, clips) - reference).max() <= 1e-5


def tf32_state() -> tuple:
    """Whether cuDNN convolutions and cuBLAS matrix products may use TF32, as PyTorch resolves it."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)  # torch >= 2.9
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, conv == "tf32"


def test_the_fold_check_runs_in_exact_float32_and_restores_the_setting():
    """On Ampere and newer GPUs cuDNN convolutions default to TF32, under which the folded and
    unfolded models differ by TF32's rounding (0.12 on R50's logits), failing the check."""
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            seen.append(tf32_state())
            return self.bn(self.conv(x))

    before = tf32_state()
    fold_batch_norms(Probe().eval(), [torch.randn(1, 3, 8, 8)])
    assert seen == [(False, False, False)] * 2
    assert tf32_state() == before


def test_cuda_graphs_are_captured_for_a_few_batch_buckets():
    from streamrec.backends.torch_backend import batch_buckets

    assert batch_buckets(8) == (1, 2, 4, 8)
    assert batch_buckets(6) == (1, 2, 4, 6)
    assert batch_buckets(1) == (1,)
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)


def test_folding_refuses_a_convolution_whose_output_is_also_read_elsewhere():
    class Shortcut(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding the norm into conv would change `y` too

    module = Shortcut().eval()
    with torch.no_grad():
        module.bn.running_var.fill_(4.0)
    with pytest.raises(RuntimeError, match="feeds more than its norm"):
        fold_batch_norms(module, [torch.randn(1, 3, 8, 8)])


# --------------------------------------------------------------------------- the run path: export cache, no torch


def test_onnxruntime_run_exports_once_then_reuses(engine_dir, monkeypatch):
    config = load_config("slowfast_tiny", ["engine.backend=onnxruntime", "engine.device=cpu"])
    first = create_engine(config)
    cached = export_path(config, "fp32")
    assert cached.parent == engine_dir and cached.is_file() and first.path == cached

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cached export matches")

    monkeypatch.setattr("streamrec.export.export_config", no_export)
    assert create_engine(config).path == cached
    # a different checkpoint, precision or clip contract is a different export
    assert export_path(config, "fp16") != cached
    assert export_path(load_config("slowfast_tiny", ["clip.sampling_rate=4"]), "fp32") != cached


def test_onnxruntime_run_path_never_imports_torch(tmp_path):
    onnx_file = export_config(load_config("slowfast_tiny"), tmp_path / "tiny.onnx")
    script = f"""
import sys
import numpy as np
from streamrec.backends import create_engine
import streamrec.backends.tensorrt_backend, streamrec.backends.tensorrt_build, streamrec.backends.trt_api
import streamrec.backends.cuda_memory, streamrec.backends.engine_cache
from streamrec.config import load_config
config = load_config("slowfast_tiny", ["engine.backend=auto", "engine.engine_file={onnx_file}", "engine.device=cpu"])
engine = create_engine(config)
logits = engine.infer({{"slow": np.zeros((2, 4, 96, 96, 3), np.uint8), "fast": np.zeros((2, 16, 96, 96, 3), np.uint8)}})
assert engine.name == "onnxruntime" and logits.shape == (2, 7), logits.shape
"""
    assert_runs_without_torch(script)


# --------------------------------------------------------------------------- choosing a backend


def test_auto_prefers_tensorrt_then_onnxruntime(monkeypatch):
    base = ["engine.backend=auto"]
    monkeypatch.setattr("streamrec.backends.tensorrt_factory.tensorrt_usable", lambda: False)
    assert resolve_backend(load_config("slowfast_tiny", base)) == "onnxruntime"
    monkeypatch.setattr("streamrec.backends.tensorrt_factory.tensorrt_usable", lambda: True)
    assert resolve_backend(load_config("slowfast_tiny", base)) == "tensorrt"
    assert resolve_backend(load_config("slowfast_tiny", [*base, "engine.device=cpu"])) == "onnxruntime"
    assert resolve_backend(load_config("slowfast_tiny", [*base, "engine.engine_file=x.onnx"])) == "onnxruntime"
    assert resolve_backend(load_config("slowfast_tiny", [*base, "engine.engine_file=x.engine"])) == "tensorrt"
    assert resolve_backend(load_config("slowfast_tiny", ["engine.backend=torch"])) == "torch"


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch):
    monkeypatch.setattr("streamrec.backends.tensorrt_factory.tensorrt_usable", lambda: False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert resolve_backend(load_config("slowfast_tiny", ["engine.backend=auto"])) == "torch"


class StubEngine:
    name, max_batch, parallel_calls, device = "stub", 3, 2, "cuda:1"

    def infer(self, inputs):
        return np.ones((1, 7), np.float32)


def test_one_registration_makes_a_backend_known_wherever_backends_are_named(monkeypatch):
    """Config validation, ``auto`` (by rank and by engine file), the precision check and
    create_engine all read the registry: nothing else names a backend."""
    import streamrec.backends as backends

    monkeypatch.setattr(backends, "_BACKENDS", backends.registered_backends())  # restored after the test
    made = []

    @backends.register_backend("stub", precisions=("fp32", "int4"), available=lambda engine: True, auto_rank=-1,
                               reads_file=lambda path: path.suffix == ".stub")
    def create(config):
        made.append(config)
        return StubEngine()

    assert "stub" in backends.backend_names() and "int4" in backends.all_precisions()
    config = load_config("slowfast_tiny", ["engine.backend=stub", "engine.precision=int4"])
    assert isinstance(create_engine(config), StubEngine) and made == [config]
    assert resolve_backend(load_config("slowfast_tiny", ["engine.backend=auto"])) == "stub"  # ranked first
    assert resolve_backend(load_config("slowfast_tiny", ["engine.backend=auto", "engine.engine_file=m.stub"])) == "stub"
    assert resolve_backend(load_config("slowfast_tiny", ["engine.backend=auto", "engine.engine_file=m.onnx"])) == \
        "onnxruntime"
    with pytest.raises(StreamrecError, match="engine.precision=bf16 is not available with the stub backend; it runs "
                                             "fp32, int4"):
        create_engine(load_config("slowfast_tiny", ["engine.backend=stub", "engine.precision=bf16"]))


def test_listing_backends_imports_no_engine_library():
    script = ("import sys; from streamrec.backends import registered_backends; print(*registered_backends()); "
              "print([m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["torch onnxruntime tensorrt", "[]"]


def test_an_engine_wrapper_forwards_what_describes_the_engine():
    from streamrec.backends import EngineWrapper

    class Doubled(EngineWrapper):
        def infer(self, inputs):
            return 2 * self.engine.infer(inputs)

    class Renamed(EngineWrapper):
        name = "renamed"

    doubled, renamed = Doubled(StubEngine()), Renamed(StubEngine())
    assert (doubled.name, doubled.max_batch, doubled.parallel_calls, doubled.device) == ("stub", 3, 2, "cuda:1")
    assert (doubled.infer({}) == 2).all() and (renamed.infer({}) == 1).all()
    assert (renamed.name, renamed.max_batch, renamed.device) == ("renamed", 3, "cuda:1")


def test_execution_providers():
    assert choose_providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = choose_providers(gpu, "auto")
    assert [p if isinstance(p, str) else p[0] for p in chosen] == gpu
    assert chosen[0][1]["trt_engine_cache_enable"] is True
    assert choose_providers(gpu, "cpu") == ["CPUExecutionProvider"]
    with pytest.raises(StreamrecError, match="no CUDA or TensorRT provider"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_gpu_providers_get_the_device_and_tensorrt_the_whole_batch_range():
    """cuda:N reaches both GPU providers; TensorRT's gets its one profile up front (batch 1 to
    max_batch), or it would rebuild its engine for every larger batch it meets."""
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    specs = input_specs(load_config("slowfast_tiny").clip)
    options = {p[0]: p[1] for p in choose_providers(gpu, "cuda:1", specs, max_batch=8) if not isinstance(p, str)}
    assert options["CUDAExecutionProvider"] == {"device_id": 1}
    trt = options["TensorrtExecutionProvider"]
    assert trt["device_id"] == 1
    assert trt["trt_profile_min_shapes"] == "slow:1x4x96x96x3,fast:1x16x96x96x3"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "slow:8x4x96x96x3,fast:8x16x96x96x3"
    fixed = {p[0]: p[1] for p in choose_providers(gpu, "cuda", specs) if not isinstance(p, str)}
    assert fixed["TensorrtExecutionProvider"]["device_id"] == 0 and \
        not any(key.startswith("trt_profile") for key in fixed["TensorrtExecutionProvider"])


def test_a_gpu_provider_onnx_runtime_could_not_start_is_never_silent(tmp_path, monkeypatch, caplog):
    """ONNX Runtime drops a provider it cannot start and runs on the CPU (here: this CPU-only
    onnxruntime, told its GPU providers exist). device=cuda refuses in one line; auto says so."""
    import onnxruntime

    path = export_config(load_config("slowfast_tiny"), tmp_path / "tiny.onnx")
    specs = input_specs(load_config("slowfast_tiny").clip)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(StreamrecError) as err:
        OnnxRuntimeEngine(path, specs, 7, device="cuda:0")
    assert "ONNX Runtime could not start TensorrtExecutionProvider or CUDAExecutionProvider for tiny.onnx" in \
        str(err.value) and "\n" not in str(err.value)
    engine = OnnxRuntimeEngine(path, specs, 7, device="auto")
    assert engine.device == "cpu" and engine.session.get_providers() == ["CPUExecutionProvider"]
    assert "could not start TensorrtExecutionProvider, CUDAExecutionProvider" in caplog.text


# --------------------------------------------------------------------------- errors, one line each


@pytest.mark.parametrize("overrides, message", [
    (["engine.backend=onnxruntime", "engine.precision=bf16"], "bf16 is not available with the onnxruntime"),
    (["engine.backend=torch", "engine.precision=fp16", "engine.device=cpu"], "fp16 needs a CUDA GPU"),
    (["engine.backend=torch", "engine.engine_file=x.onnx"], "engine_file is for onnxruntime and tensorrt"),
    (["engine.backend=onnxruntime", "engine.engine_file=x.engine"], "ONNX Runtime reads .onnx files"),
    (["engine.backend=onnxruntime", "engine.engine_file=missing.onnx"], "missing.onnx not found"),
])
def test_configuration_mistakes_are_one_line(overrides, message):
    with pytest.raises(StreamrecError, match=message) as err:
        create_engine(load_config("slowfast_tiny", overrides))
    assert "\n" not in str(err.value)


def test_onnx_from_another_config_is_refused(tmp_path):
    onnx_file = export_config(load_config("slowfast_tiny", ["clip.sampling_rate=4"]), tmp_path / "other.onnx")
    config = load_config("slowfast_tiny", ["engine.backend=onnxruntime", f"engine.engine_file={onnx_file}"])
    with pytest.raises(StreamrecError, match="exported for clip.sampling_rate=4, the config has 2"):
        create_engine(config)
    wrong_shape = export_config(load_config("slowfast_tiny", ["clip.crop_size=64", "clip.short_side=80"]),
                                tmp_path / "small.onnx")
    config = load_config("slowfast_tiny", ["engine.backend=onnxruntime", f"engine.engine_file={wrong_shape}"])
    with pytest.raises(StreamrecError, match=r"input 'slow' is tensor\(uint8\).*the config needs uint8 \[B, 4, 96, 96, 3\]"):
        create_engine(config)


def test_corrupt_onnx_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(StreamrecError, match="ONNX Runtime cannot load") as err:
        OnnxRuntimeEngine(bad, input_specs(load_config("slowfast_tiny").clip), 7, device="cpu")
    assert "\n" not in str(err.value)


def test_inputs_are_checked_before_they_reach_an_engine():
    specs = input_specs(load_config("slowfast_tiny").clip)
    good = {"slow": np.zeros((2, 4, 96, 96, 3), np.uint8), "fast": np.zeros((2, 16, 96, 96, 3), np.uint8)}
    assert batch_size(good, specs, max_batch=4) == 2
    with pytest.raises(StreamrecError, match="missing fast"):
        batch_size({"slow": good["slow"]}, specs, 4)
    with pytest.raises(StreamrecError, match=r"'fast' must be uint8 \[B, 16, 96, 96, 3\], got float32"):
        batch_size({**good, "fast": good["fast"].astype(np.float32)}, specs, 4)
    with pytest.raises(StreamrecError, match="disagree on the batch size"):
        batch_size({**good, "fast": good["fast"][:1]}, specs, 4)
    with pytest.raises(StreamrecError, match="this engine takes 1 to 1"):
        batch_size(good, specs, 1)


# --------------------------------------------------------------------------- parallel calls


def test_parallel_onnxruntime_calls_each_get_a_session_and_the_same_logits(tmp_path):
    """engine.parallel_calls: 2 on the CPU: two sessions, and calls from several threads at once
    return what one call at a time does."""
    from concurrent.futures import ThreadPoolExecutor

    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 6)
    path = export_onnx(random_model(config, clips), config.clip, tmp_path / "tiny.onnx")
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cpu", threads=1, parallel_calls=2)
    assert engine.parallel_calls == 2 and engine._idle_sessions.qsize() == 2
    batches = [{name: a[i:i + 1] for name, a in clips.items()} for i in range(6)]
    one_at_a_time = [engine.infer(batch) for batch in batches]
    assert_meaningful(np.concatenate(one_at_a_time))
    with ThreadPoolExecutor(4) as pool:  # more callers than sessions: the extra ones wait their turn
        side_by_side = list(pool.map(engine.infer, batches * 3))
    for got, expected in zip(side_by_side, one_at_a_time * 3):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert engine._idle_sessions.qsize() == 2  # every session back in the pool


def test_threads_per_call_share_out_the_cores_between_parallel_calls(monkeypatch):
    from streamrec.backends import call_threads
    from streamrec.config import EngineConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert call_threads(EngineConfig()) == 0  # one call: the library's default
    assert call_threads(EngineConfig(parallel_calls=2)) == 4
    assert call_threads(EngineConfig(parallel_calls=3)) == 2
    assert call_threads(EngineConfig(parallel_calls=16)) == 1
    assert call_threads(EngineConfig(threads=3, parallel_calls=2)) == 3  # as configured


def test_parallel_calls_on_a_gpu_engine_are_refused_in_one_line():
    config = load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.parallel_calls=2"])
    with pytest.raises(StreamrecError, match="engine.parallel_calls > 1 is for engines on the CPU.*pipeline.max_batch"):
        create_engine(config)
    with pytest.raises(StreamrecError, match="this torch engine runs on a GPU"):
        TorchEngine(nn.Identity(), input_specs(config.clip), torch.device("cuda"), parallel_calls=2)


def test_bench_s_torch_compile_variant_compiles_the_torch_engine_s_model(monkeypatch):
    """``bench engine --backend torch-compile``: the torch backend's engine, its folded model
    passed through torch.compile (recorded here; compiling itself is for a GPU)."""
    from streamrec.bench.engine import BACKENDS, open_engine

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    config = load_config("slowfast_tiny", ["engine.device=cpu"])
    engine = open_engine(config, "torch-compile", "fp32", max_batch=2)
    assert "torch-compile" in BACKENDS and engine.name == "torch" and engine.max_batch == 2
    (module,) = compiled
    assert engine.module is module and not any(isinstance(m, nn.BatchNorm3d) for m in module.modules())
    batch = {"slow": np.zeros((2, 4, 96, 96, 3), np.uint8), "fast": np.zeros((2, 16, 96, 96, 3), np.uint8)}
    assert engine.infer(batch).shape == (2, 7)


def test_cached_files_are_ordinary_files_readable_as_the_umask_allows(tmp_path):
    """An exported model is not a secret: written atomically, but not private (mkstemp's 0600)."""
    from streamrec.backends.engine_cache import write_atomically

    previous = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "model.onnx", b"graph")
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"graph" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind


# --------------------------------------------------------------------------- RoI engines: boxes in, a row per box out


def test_boxes_are_checked_and_clipped_to_the_frame_before_they_reach_an_engine():
    from streamrec.backends.inputs import BoxesSpec, checked_boxes

    spec = BoxesSpec(frame_size=96, max_boxes=4)
    good = np.array([[0, -5, 10, 50, 120], [1, 10.5, 20.25, 30, 40]], np.float32)
    clipped = checked_boxes({"boxes": good}, spec, batch=2)
    assert clipped.tolist() == [[0, 0, 10, 50, 96], [1, 10.5, 20.25, 30, 40]] and good[0, 1] == -5  # a copy
    assert checked_boxes({"boxes": good[:0]}, spec, batch=2).shape == (0, 5)
    wrong = [
        ({}, "'boxes' is missing: this engine's model has an RoI head"),
        ({"boxes": good.astype(np.float64)}, r"must be float32 \[N, 5\].*got float64 \[2, 5\]"),
        ({"boxes": good[:, :4]}, r"got float32 \[2, 4\]"),
        ({"boxes": np.repeat(good, 3, axis=0)}, "6 boxes in one call; this engine takes up to 4"),
        ({"boxes": np.array([[0, 1, 2, np.nan, 4]], np.float32)}, "not a number .row 0."),
        ({"boxes": np.array([[0, 1, 2, 3, 4], [2, 1, 2, 3, 4]], np.float32)}, "box 1 names clip 2 of a batch of 2"),
        ({"boxes": np.array([[0.5, 1, 2, 3, 4]], np.float32)}, "box 0 names clip 0.5"),
        ({"boxes": np.array([[0, 1, 2, 3, 4], [1, 100, 2, 130, 40]], np.float32)},
         r"box 1 \[100.0, 2.0, 130.0, 40.0\] has no area inside the 96x96 frame"),
        ({"boxes": np.array([[0, 10, 20, 10, 40]], np.float32)}, "box 0 .* has no area"),
    ]
    for inputs, message in wrong:
        with pytest.raises(StreamrecError, match=message) as err:
            checked_boxes(inputs, spec, batch=2)
        assert "\n" not in str(err.value)
    with pytest.raises(StreamrecError, match="classifies whole clips and takes no boxes"):
        checked_boxes({"boxes": good}, None, batch=2)
    assert checked_boxes({}, None, batch=2) is None


ROI_AT_96 = ["clip.short_side=96", "clip.crop_size=96"]  # the RoI tests' clips: 96 px, whatever the shipped model's


@pytest.fixture(scope="module")
def roi_engines(tmp_path_factory):
    """The tiny RoI model with clip-dependent weights, in the torch engine and in ONNX Runtime."""
    from streamrec.backends.inputs import MAX_BOXES_PER_CLIP

    config = load_config("slowfast_tiny_roi", ROI_AT_96)
    clips = varied_clips(config.clip, 3)
    model = random_model(config, clips)
    path = export_onnx(model, config.clip, tmp_path_factory.mktemp("roi") / "roi.onnx")
    specs = input_specs(config.clip)
    engines = {"onnxruntime": OnnxRuntimeEngine(path, specs, 7, device="cpu", max_batch=3),
               "torch": TorchEngine(model, specs, torch.device("cpu"), max_batch=3)}
    assert all(e.takes_boxes and e.boxes.max_boxes == 3 * MAX_BOXES_PER_CLIP for e in engines.values())
    return config, clips, model, path, engines


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_an_roi_engine_returns_a_row_per_box_of_its_clipped_box(roi_engines, backend):
    config, clips, model, _, engines = roi_engines
    engine = engines[backend]
    boxes = np.array([[2, 10, 5, 60, 90], [0, -20, 30, 40, 130], [2, 50, 0, 96, 50]], np.float32)
    logits = engine.infer({**clips, "boxes": boxes})
    assert logits.shape == (3, 7) and logits.dtype == np.float32
    inside = np.array([[2, 10, 5, 60, 90], [0, 0, 30, 40, 96], [2, 50, 0, 96, 50]], np.float32)
    with torch.no_grad():
        expected = model(*[torch.from_numpy(clips[n]) for n in config.clip.input_names], torch.from_numpy(inside))
    assert np.abs(logits - expected.numpy()).max() <= FP32_TOLERANCE
    assert np.abs(logits[0] - logits[2]).max() > 1e-3  # two people on one clip are told apart


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_an_roi_engine_with_no_boxes_runs_nothing_and_returns_no_rows(roi_engines, backend, monkeypatch):
    _, clips, _, _, engines = roi_engines
    engine = engines[backend]

    class Refusing:
        def run(self, *args):
            raise AssertionError("the engine ran a call with no boxes")

    if backend == "onnxruntime":
        monkeypatch.setattr(engine, "_idle_sessions", type("Q", (), {"get": lambda s: Refusing(), "put": print})())
    else:
        monkeypatch.setattr(engine, "run", Refusing().run)
    logits = engine.infer({**clips, "boxes": np.zeros((0, 5), np.float32)})
    assert logits.shape == (0, 7) and logits.dtype == np.float32
    with pytest.raises(StreamrecError, match="'boxes' is missing"):  # the clips alone are not a call
        engine.infer(clips)


def test_a_whole_clip_engine_refuses_boxes(tmp_path):
    config = load_config("slowfast_tiny")
    engine = OnnxRuntimeEngine(export_config(config, tmp_path / "tiny.onnx"), input_specs(config.clip), 7,
                               device="cpu")
    clips = {"slow": np.zeros((1, 4, 96, 96, 3), np.uint8), "fast": np.zeros((1, 16, 96, 96, 3), np.uint8)}
    assert not engine.takes_boxes and engine.infer(clips).shape == (1, 7)
    with pytest.raises(StreamrecError, match="takes no boxes"):
        engine.infer({**clips, "boxes": np.zeros((1, 5), np.float32)})


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_each_engine_takes_only_the_call_its_model_makes(backend, engine_dir):
    """A clip engine refuses a state (a caller would think it streams); a streaming engine refuses
    infer (a caller would drop the new state): one line each, the same on every backend."""
    clip_engine = create_engine(load_config("slowfast_tiny", [f"engine.backend={backend}", "engine.threads=1"]))
    clips = {"slow": np.zeros((1, 4, 96, 96, 3), np.uint8), "fast": np.zeros((1, 16, 96, 96, 3), np.uint8)}
    assert clip_engine.infer(clips).shape == (1, 7)
    with pytest.raises(StreamrecError, match="carries no state; export the streaming form") as err:
        clip_engine.infer({**clips, "state": np.zeros((1, 4), np.float32)})
    assert "\n" not in str(err.value)
    streaming = create_engine(load_config("slowfast_tiny_streaming", [f"engine.backend={backend}",
                                                                      "engine.threads=1"]))
    new_frames = {s.name: np.zeros((1, *s.clip_shape), np.uint8) for s in streaming.specs}
    with pytest.raises(StreamrecError, match="carries state from call to call: run it with step") as err:
        streaming.infer(new_frames)
    assert "\n" not in str(err.value)
    logits, state = streaming.step({**new_frames, "state": streaming.state.zeros(1)})
    assert logits.shape == (1, 7) and state.shape == (1, streaming.state.size)


def test_a_fixed_batch_roi_export_pads_the_clips_not_the_boxes(roi_engines, tmp_path):
    config, clips, model, _, engines = roi_engines
    path = export_onnx(model, config.clip, tmp_path / "roi_b3.onnx", batch=3)
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cpu")
    assert engine.max_batch == 3 and engine.takes_boxes
    two = {name: array[:2] for name, array in clips.items()}
    boxes = np.array([[1, 10, 5, 60, 90], [0, 0, 0, 96, 96]], np.float32)
    assert np.abs(engine.infer({**two, "boxes": boxes}) - engines["torch"].infer({**two, "boxes": boxes})).max() \
        <= FP32_TOLERANCE


def test_the_onnxruntime_tensorrt_provider_gets_the_range_of_boxes_too():
    from streamrec.backends.inputs import BoxesSpec

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    specs = input_specs(load_config("slowfast_tiny_roi", ROI_AT_96).clip)
    chosen = choose_providers(gpu, "cuda", specs, max_batch=4, boxes=BoxesSpec(96, 64))
    trt = next(p[1] for p in chosen if not isinstance(p, str) and p[0] == "TensorrtExecutionProvider")
    assert trt["trt_profile_min_shapes"] == "slow:1x4x96x96x3,fast:1x16x96x96x3,boxes:1x5"
    assert trt["trt_profile_max_shapes"] == "slow:4x4x96x96x3,fast:4x16x96x96x3,boxes:64x5"


def test_onnxruntime_roi_run_path_never_imports_torch(roi_engines):
    _, _, _, onnx_file, _ = roi_engines
    script = f"""
import sys
import numpy as np
from streamrec.backends import create_engine
from streamrec.config import load_config
config = load_config("slowfast_tiny_roi", ["engine.backend=auto", "engine.engine_file={onnx_file}", "engine.device=cpu",
                                          "clip.short_side=96", "clip.crop_size=96"])
engine = create_engine(config)
clips = {{"slow": np.zeros((2, 4, 96, 96, 3), np.uint8), "fast": np.zeros((2, 16, 96, 96, 3), np.uint8)}}
boxes = np.array([[1, 0, 0, 50, 96], [0, 5, 5, 20, 30], [1, 9, 9, 99, 99]], np.float32)
logits = engine.infer({{**clips, "boxes": boxes}})
assert engine.name == "onnxruntime" and engine.takes_boxes and logits.shape == (3, 7), logits.shape
assert engine.infer({{**clips, "boxes": np.zeros((0, 5), np.float32)}}).shape == (0, 7)
"""
    assert_runs_without_torch(script)


# The TensorRT engine's boxes handling, through test_tensorrt's stand-ins of TensorRT and CUDA, with a
# "network" whose row for a box is its clip's score (the stand-ins' `fake_network`) plus the box's
# coordinates over 1000: any box given to the wrong clip, or rows out of order, shows.


def fake_roi_plan(min_boxes: int = 1, max_boxes: int = 8, boxes_dtype: str = "FLOAT") -> bytes:
    import json

    from test_tensorrt import CLASSES, PLAN_MAGIC, SPECS

    profiles = {s.name: [(1, *s.clip_shape), (4, *s.clip_shape), (4, *s.clip_shape)] for s in SPECS}
    profiles["boxes"] = [(min_boxes, 5), (max_boxes, 5), (max_boxes, 5)]
    dtypes = {**{s.name: "UINT8" for s in SPECS}, "boxes": boxes_dtype, "logits": "FLOAT"}
    return json.dumps({"magic": PLAN_MAGIC, "version": "10.3.0", "profiles": profiles, "classes": CLASSES,
                       "dtypes": dtypes}).encode()


def fake_roi_engine(plan: bytes):
    """A `TensorRTEngine` over the stand-ins, their engine computing per box (see above)."""
    import test_tensorrt as fakes

    from streamrec.backends.tensorrt_backend import TensorRTEngine

    class RoIContext(fakes.FakeContext):
        def get_tensor_shape(self, name):
            if name in self.engine.profiles:
                return super().get_tensor_shape(name)
            return (self.shapes["boxes"][0] if "boxes" in self.shapes else -1, self.engine.classes)

        def execute_async_v3(self, stream_handle) -> bool:
            device = self.engine.device
            stream = device.streams[stream_handle]
            shapes, addresses = dict(self.shapes), dict(self.addresses)

            def compute() -> None:
                read = {}
                for name, shape in shapes.items():
                    dtype = np.float32 if name == "boxes" else np.uint8
                    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    read[name] = np.frombuffer(device.buffers[addresses[name]][:size], dtype).reshape(shape)
                boxes = read.pop("boxes")
                per_clip = fakes.fake_network(read, self.engine.classes)
                logits = per_clip[boxes[:, 0].astype(int)] + boxes[:, 1:].sum(1, keepdims=True) / 1000
                device.buffers[addresses["logits"]][: logits.nbytes] = logits.astype(np.float32).tobytes()

            stream.enqueue(compute)
            self.engine.runs += 1
            return True

    class RoIEngine(fakes.FakeEngine):
        runs = 0

        def create_execution_context(self):
            self.contexts.append(RoIContext(self))
            return self.contexts[-1]

    class RoITensorRT(fakes.FakeTensorRT):
        def deserialize(self, plan):
            import json

            super().deserialize(plan)
            self.engines[-1] = RoIEngine(json.loads(plan), self)
            return self.engines[-1]

    device = fakes.FakeDevice()
    api = RoITensorRT(device)
    return TensorRTEngine(plan, api, device, fakes.SPECS, fakes.CLASSES), api


def test_tensorrt_roi_engine_sends_boxes_and_returns_their_rows():
    import test_tensorrt as fakes

    engine, api = fake_roi_engine(fake_roi_plan())
    assert engine.takes_boxes and engine.boxes.max_boxes == 8 and engine.max_batch == 4
    clips = fakes.clips(3)
    boxes = np.array([[2, 1, 2, 3, 4], [0, 0, 0, 8, 8], [2, -3, 1, 5, 9]], np.float32)  # the frames are 8x8
    logits = engine.infer({**clips, "boxes": boxes})
    clipped = np.array([[2, 1, 2, 3, 4], [0, 0, 0, 8, 8], [2, 0, 1, 5, 8]], np.float32)
    expected = fakes.fake_network(clips)[[2, 0, 2]] + clipped[:, 1:].sum(1, keepdims=True) / 1000
    assert logits.shape == (3, fakes.CLASSES) and np.allclose(logits, expected, atol=1e-6)


def test_tensorrt_roi_engine_pads_boxes_below_the_profile_and_runs_nothing_without_any():
    import test_tensorrt as fakes

    engine, api = fake_roi_engine(fake_roi_plan(min_boxes=4))
    clips = fakes.clips(2)
    boxes = np.array([[1, 1, 1, 6, 7]], np.float32)
    logits = engine.infer({**clips, "boxes": boxes})
    assert logits.shape == (1, fakes.CLASSES)
    assert np.allclose(logits, fakes.fake_network(clips)[[1]] + (1 + 1 + 6 + 7) / 1000, atol=1e-6)
    assert engine.context.shapes["boxes"] == (4, 5)  # run at the profile's minimum, the extra rows dropped
    runs = api.engines[-1].runs
    empty = engine.infer({**clips, "boxes": np.zeros((0, 5), np.float32)})
    assert empty.shape == (0, fakes.CLASSES) and empty.dtype == np.float32 and api.engines[-1].runs == runs
    with pytest.raises(StreamrecError, match="9 boxes in one call; this engine takes up to 8"):
        engine.infer({**clips, "boxes": np.repeat(boxes, 9, axis=0)})


def test_tensorrt_engine_with_boxes_of_another_type_is_refused():
    with pytest.raises(StreamrecError, match=r"input 'boxes' is float16 \[8, 5\]; an RoI model takes float32"):
        fake_roi_engine(fake_roi_plan(boxes_dtype="HALF"))
