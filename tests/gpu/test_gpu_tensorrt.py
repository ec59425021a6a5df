"""On a machine with TensorRT and a CUDA GPU: the real `trt_api.RealTensorRT`, end to end, on each
CUDA memory implementation (see gpu_support.py for what each test needs, and STREAMREC_REQUIRE_GPU).

    pip install -e '.[tensorrt]' pycuda   # or JetPack's TensorRT on a Jetson
    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from streamrec.backends import create_engine
from streamrec.backends.engine_cache import BatchProfile, EngineRecord
from streamrec.backends.inputs import input_specs
from streamrec.backends.tensorrt_backend import TensorRTEngine, read_plan
from streamrec.backends.tensorrt_build import build_engine
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from gpu_support import (  # noqa: F401  (fixtures, used by name)
    cuda_torch, memory, modelopt, onnxruntime_gpu, top1, trt_api)
from test_export import onnx_logits, random_model, varied_clips

pytestmark = pytest.mark.usefixtures("engine_dir")

BOUNDS = {"fp32": 1e-3, "fp16": 1e-2}  # against ONNX Runtime on the CPU running the same graph


def tiny_graph(tmp_path, precision: str):
    from streamrec.export import export_onnx

    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 8)
    onnx_file = export_onnx(random_model(config, clips), config.clip, tmp_path / f"tiny.{precision}.onnx",
                            fp16=precision == "fp16")
    return config, clips, onnx_file


def run_engine(path, api, memory, config) -> TensorRTEngine:
    return TensorRTEngine(read_plan(path, api, memory), api, memory, input_specs(config.clip), config.model.num_classes)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_built_engine_matches_onnxruntime_on_each_memory(trt_api, memory, precision, tmp_path, top1):
    config, clips, onnx_file = tiny_graph(tmp_path, precision)
    reference = onnx_logits(onnx_file, clips)
    path = build_engine(onnx_file, precision, BatchProfile(1, 4, 8), trt_api, memory)
    engine = run_engine(path, trt_api, memory, config)
    for size in (8, 1, 5):
        logits = engine.infer({k: v[:size] for k, v in clips.items()})
        assert np.abs(logits - reference[:size]).max() <= BOUNDS[precision]
    top1(engine.infer(clips), reference, BOUNDS[precision])


def test_fp16_engine_computes_in_fp16_and_fp32_in_fp32(trt_api, tmp_path):
    from streamrec.backends.cuda_memory import open_device

    memory = open_device(0)
    kinds = {}
    for precision in ("fp16", "fp32"):
        _, _, onnx_file = tiny_graph(tmp_path, precision)
        path = build_engine(onnx_file, precision, BatchProfile(1, 2, 2), trt_api, memory)
        with memory.activate():
            kinds[precision] = trt_api.layer_types(trt_api.deserialize(path.read_bytes()))
    half = {k: n for k, n in kinds["fp16"].items() if "half" in k.lower() or "fp16" in k.lower()}
    assert half, f"no fp16 tensors in the fp16 engine: {dict(kinds['fp16'])}"
    assert not any("half" in k.lower() or "fp16" in k.lower() for k in kinds["fp32"]), dict(kinds["fp32"])
    memory.close()


def test_corrupt_and_foreign_engines_are_one_line(trt_api, tmp_path):
    from streamrec.backends.cuda_memory import open_device
    from streamrec.export import export_config

    config = load_config("slowfast_tiny")
    onnx_file = export_config(config, tmp_path / "tiny.onnx")
    memory = open_device(0)
    path = build_engine(onnx_file, "fp32", BatchProfile(1, 2, 2), trt_api, memory)

    record = json.loads(EngineRecord.path_for(path).read_text())
    record["key"]["tensorrt_version"] = "9.9.9"
    EngineRecord.path_for(path).write_text(json.dumps(record))
    with pytest.raises(StreamrecError, match="built with TensorRT 9.9.9"):
        read_plan(path, trt_api, memory)

    EngineRecord.path_for(path).unlink()  # no record: TensorRT itself must refuse the truncated plan
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(StreamrecError, match="cannot load") as err:
        run_engine(path, trt_api, open_device(0), config)
    assert "\n" not in str(err.value)


def test_create_engine_builds_reuses_and_says_why_it_rebuilds(trt_api, caplog, engine_dir):
    caplog.set_level(logging.INFO, logger="streamrec")
    config = load_config("slowfast_tiny", ["engine.backend=tensorrt", "engine.device=cuda", "pipeline.max_batch=2"])
    clips = varied_clips(config.clip, 2)
    first = create_engine(config).infer(clips)
    assert len(list(engine_dir.glob("*.engine"))) == 1
    caplog.clear()
    np.testing.assert_allclose(create_engine(config).infer(clips), first, atol=1e-5, rtol=0)
    assert "reusing the TensorRT engine" in caplog.text
    caplog.clear()
    create_engine(config.replace(pipeline=dataclasses.replace(config.pipeline, max_batch=4)))
    assert "batch profile 1:2:2 -> 1:4:4" in caplog.text and len(list(engine_dir.glob("*.engine"))) == 2


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "int8"])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "tensorrt"])
def test_create_engine_for_every_backend_and_precision(request, backend, precision):
    """Every combination the registry offers runs on the GPU; the others are refused in one line
    (int8 too: it needs a graph calibrated from videos first, see test_int8_through_modelopt)."""
    from streamrec.backends import get_backend

    request.getfixturevalue({"torch": "cuda_torch", "onnxruntime": "onnxruntime_gpu", "tensorrt": "trt_api"}[backend])
    config = load_config("slowfast_tiny", [f"engine.backend={backend}", f"engine.precision={precision}",
                                           "engine.device=cuda"])
    if precision not in get_backend(backend).precisions or precision == "int8":
        with pytest.raises(StreamrecError) as err:
            create_engine(config)
        assert "\n" not in str(err.value)
        return
    engine = create_engine(config)
    assert engine.device == "cuda:0"
    logits = engine.infer(varied_clips(config.clip, 2))
    assert logits.shape == (2, config.model.num_classes) and np.isfinite(logits).all()


def test_build_engine_command(trt_api, tmp_path, capsys, engine_dir):
    from streamrec.cli import main as cli_main

    _, _, onnx_file = tiny_graph(tmp_path, "fp32")
    assert cli_main(["build-engine", "--onnx", str(onnx_file), "--batch", "1:2:4"]) == 0
    (engine,) = engine_dir.glob("*.b1-2-4.*.engine")
    assert f"built {engine}" in capsys.readouterr().out
    assert cli_main(["build-engine", "--onnx", str(onnx_file), "--batch", "1:2:4"]) == 0
    assert "reusing the TensorRT engine" in capsys.readouterr().out


def test_int8_through_modelopt(trt_api, modelopt, tmp_path):
    """A Q/DQ graph calibrated on procedural videos: the engine has int8 layers and follows the
    fp32 graph's logits (by correlation: int8 moves logits too far for a small absolute bound)."""
    from streamrec.backends.calibration import calibration_clips, quantize_int8
    from streamrec.backends.cuda_memory import open_device
    from streamrec.procedural import surveillance_scene, write_video

    config, clips, onnx_file = tiny_graph(tmp_path, "fp32")
    videos = tmp_path / "calibration"
    videos.mkdir()
    for seed in (5, 6):
        write_video(surveillance_scene(seed, duration_s=6), videos / f"camera{seed}.mp4")
    calibration = calibration_clips(config.clip, videos, 16, config.pipeline)
    int8_file = quantize_int8(onnx_file, calibration, tmp_path / "tiny.int8.onnx")
    memory = open_device(0)
    path = build_engine(int8_file, "int8", BatchProfile(1, 8, 8), trt_api, memory)
    engine = run_engine(path, trt_api, memory, config)
    with memory.activate():
        kinds = trt_api.layer_types(trt_api.deserialize(path.read_bytes()))
    assert any("int8" in kind.lower() for kind in kinds), dict(kinds)
    logits, reference = engine.infer(clips), onnx_logits(onnx_file, clips)
    assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.95


def test_cuda_n_engines(trt_api, tmp_path):
    """With two or more GPUs, an engine on cuda:1 matches one on cuda:0; with one, cuda:1 is one line."""
    from streamrec.backends.cuda_memory import gpu_count, open_device

    config, clips, onnx_file = tiny_graph(tmp_path, "fp32")
    if gpu_count() < 2:
        with pytest.raises(StreamrecError, match="no CUDA GPU 1"):
            open_device(1)
        return
    results = []
    for index in (0, 1):
        memory = open_device(index)
        path = build_engine(onnx_file, "fp32", BatchProfile(1, 4, 4), trt_api, memory)
        results.append(run_engine(path, trt_api, memory, config).infer({k: v[:4] for k, v in clips.items()}))
    np.testing.assert_allclose(results[1], results[0], atol=1e-3, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_streaming_engine_steps_as_onnxruntime_does_across_hops(trt_api, precision):
    """A streaming config's engine (state in, new state out) built by create_engine follows the
    ONNX Runtime engine of the same config over a sequence of hops, rows of different states."""
    config = load_config("slowfast_tiny_streaming", ["engine.backend=tensorrt", "engine.device=cuda",
                                                     f"engine.precision={precision}", "pipeline.max_batch=4"])
    engine = create_engine(config)
    reference = create_engine(load_config("slowfast_tiny_streaming", ["engine.backend=onnxruntime",
                                                                      "engine.device=cpu"]))
    assert engine.streaming == reference.streaming
    rng = np.random.default_rng(0)
    states = [engine.state.zeros(3), reference.state.zeros(3)]
    for _ in range(engine.streaming.warmup_units + 2):
        frames = {s.name: rng.integers(0, 256, (3, *s.clip_shape), np.uint8) for s in engine.specs}
        (logits, states[0]), (expected, states[1]) = [e.step({**frames, "state": s})
                                                      for e, s in zip((engine, reference), states)]
        assert np.abs(logits - expected).max() <= 10 * BOUNDS[precision]  # errors carried through the state add up
