"""int8 on ONNX Runtime's CPU: `build-engine --backend onnxruntime` quantizes the float32 export
on calibration videos, a run with ``engine.precision=int8`` finds that graph, and the trained
demo model predicts through it what it predicts in float32 (on clips it was not calibrated on).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from streamrec.backends import create_engine
from streamrec.backends.calibration import calibration_clips
from streamrec.backends.engine_cache import cached_export
from streamrec.cli import main as cli_main
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.procedural import write_surveillance_videos

REPO = Path(__file__).resolve().parent.parent
RUN_WITHOUT_TORCH = """
import sys
import numpy as np
from streamrec.backends import create_engine
from streamrec.config import load_config
config = load_config("slowfast_tiny", ["engine.backend=onnxruntime", "engine.device=cpu", "engine.precision=int8"])
engine = create_engine(config)
logits = engine.infer({"slow": np.zeros((1, 4, 96, 96, 3), np.uint8), "fast": np.zeros((1, 16, 96, 96, 3), np.uint8)})
assert logits.shape == (1, 7) and "cpu-int8" in engine.path.name, engine.path
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


pytestmark = pytest.mark.usefixtures("engine_dir")  # every test gets an empty engine cache


def int8_config():
    config = load_config("slowfast_tiny")
    return config.replace(engine=dataclasses.replace(config.engine, backend="onnxruntime", device="cpu",
                                                     precision="int8"))


def test_int8_graph_is_built_once_found_by_precision_and_predicts_as_float32(tmp_path, capsys):
    config = int8_config()
    with pytest.raises(StreamrecError, match="build-engine --backend onnxruntime --precision int8 --onnx "):
        create_engine(config)  # nothing built yet: the error names the command

    float_graph = cached_export(config, "fp32")
    calibration = tmp_path / "calibration"
    write_surveillance_videos(calibration, count=1, seed=7, duration_s=20)
    command = ["build-engine", "--backend", "onnxruntime", "--precision", "int8", "--onnx", str(float_graph),
               "--calibration", str(calibration), "--calibration-clips", "16"]
    assert cli_main(command) == 0
    (int8_graph,) = float_graph.parent.glob(f"{float_graph.stem}.cpu-int8.*.onnx")
    assert f"--engine {int8_graph}" in capsys.readouterr().out
    assert cli_main(command) == 0
    assert f"reusing the int8 graph {int8_graph}" in capsys.readouterr().out

    model = onnx.load(str(int8_graph))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    (classifier,) = [node for node in model.graph.node if node.op_type == "MatMul"]
    after = {node.op_type for node in model.graph.node if set(classifier.output) & set(node.input)}
    assert "QuantizeLinear" not in after  # the classifier stays float32: logits are not rounded to 256 levels
    assert {p.key for p in model.metadata_props} == {p.key for p in onnx.load(str(float_graph)).metadata_props}

    int8 = create_engine(config)  # found by precision; its metadata checked against the config
    assert int8.path == int8_graph
    float32 = create_engine(config.replace(engine=dataclasses.replace(config.engine, precision="fp32")))
    unseen = tmp_path / "unseen"
    write_surveillance_videos(unseen, count=1, seed=11, duration_s=20)
    clips = calibration_clips(config.clip, unseen, 24, config.pipeline)
    int8_logits = np.concatenate([int8.infer({k: v[i:i + 4] for k, v in clips.items()}) for i in range(0, 24, 4)])
    float_logits = np.concatenate([float32.infer({k: v[i:i + 4] for k, v in clips.items()})
                                   for i in range(0, 24, 4)])
    assert len(set(float_logits.argmax(1))) > 1  # clips the model tells apart, not one answer for all
    agreement = np.mean(int8_logits.argmax(1) == float_logits.argmax(1))
    assert agreement >= 0.9, agreement
    assert not np.allclose(int8_logits, float_logits, atol=1e-6)  # int8 really ran: not the float graph

    # Building needed PyTorch (export, calibration videos); running the int8 graph does not.
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_build_engine_for_onnxruntime_is_int8_only_and_needs_videos(tmp_path, capsys):
    float_graph = cached_export(int8_config(), "fp32")
    assert cli_main(["build-engine", "--backend", "onnxruntime", "--onnx", str(float_graph)]) == 2
    assert "ONNX Runtime runs fp32 graphs as exported" in capsys.readouterr().err
    assert cli_main(["build-engine", "--backend", "onnxruntime", "--precision", "int8",
                     "--onnx", str(float_graph)]) == 2
    assert "int8 needs calibration videos: add --calibration DIR" in capsys.readouterr().err


def test_build_engine_refuses_int8_for_a_streaming_graph_in_one_line(tmp_path, capsys, engine_dir):
    streaming_graph = cached_export(load_config("slowfast_tiny_causal"), "fp32")  # takes the carried state too
    (tmp_path / "videos").mkdir()
    for backend in ("onnxruntime", "tensorrt"):
        assert cli_main(["build-engine", "--backend", backend, "--precision", "int8", "--onnx", str(streaming_graph),
                         "--calibration", str(tmp_path / "videos")]) == 2
        said = capsys.readouterr().err
        assert "Traceback" not in said
        if backend == "onnxruntime":  # without TensorRT here, the tensorrt backend stops at its missing library first
            assert said.strip().splitlines() == [
                f"error: {streaming_graph} is a streaming graph (it carries state from call to call), and int8 "
                "calibration runs whole clips: build it at fp32 (or fp16 from an `export --fp16` graph)"]


def test_build_engine_refuses_a_file_that_is_not_onnx_and_a_graph_its_clips_cannot_feed(tmp_path, capsys):
    """Each was a traceback: protobuf's decode error, and ONNX Runtime's missing inputs during
    calibration (an RoI graph's boxes; a config for another model's pathways)."""
    (tmp_path / "videos").mkdir()
    not_onnx = tmp_path / "clip.onnx"
    not_onnx.write_bytes(b"\x00\x01 not a graph" * 40)
    common = ["build-engine", "--backend", "onnxruntime", "--precision", "int8", "--calibration",
              str(tmp_path / "videos")]
    assert cli_main([*common, "--onnx", str(not_onnx)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"error: {not_onnx} is not an ONNX graph (DecodeError); export one with `run_stream.py export`"
    roi_graph = cached_export(load_config("slowfast_tiny_roi"), "fp32")
    assert cli_main([*common, "--onnx", str(roi_graph)]) == 2
    said = capsys.readouterr().err
    assert "takes ['boxes', 'fast', 'slow'], and int8 calibration feeds clips of ['slow', 'fast']" in said
    float_graph = cached_export(int8_config(), "fp32")
    assert cli_main([*common, "--onnx", str(float_graph), "--config", "slow_r50_8x8"]) == 2
    assert "int8 calibration feeds clips of ['frames']" in capsys.readouterr().err
