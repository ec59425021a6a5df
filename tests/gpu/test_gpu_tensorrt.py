"""On a machine with TensorRT and a CUDA GPU: the real `trt_api.RealTensorRT`, end to end
(skipped elsewhere; nothing here has run yet, see engines/README.md).

    pip install tensorrt cuda-python   # or JetPack's TensorRT on a Jetson
    STREAMREC_ENGINE_DIR=/tmp/engines .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # test_export's helpers

from streamrec.backends.cuda_memory import gpu_count, open_device  # noqa: E402
from streamrec.backends.engine_cache import BatchProfile, EngineRecord  # noqa: E402
from streamrec.backends.inputs import input_specs  # noqa: E402
from streamrec.backends.tensorrt_backend import TensorRTEngine, read_plan  # noqa: E402
from streamrec.backends.tensorrt_build import build_engine  # noqa: E402
from streamrec.backends.trt_api import load_tensorrt  # noqa: E402
from streamrec.config import load_config  # noqa: E402
from streamrec.errors import StreamrecError  # noqa: E402
from test_export import onnx_logits, random_model, varied_clips  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or gpu_count() == 0,
                                reason="needs TensorRT and a CUDA GPU")


@pytest.fixture(autouse=True)
def engine_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_ENGINE_DIR", str(tmp_path / "engines"))


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_built_engine_matches_onnxruntime(precision, tolerance, tmp_path):
    from streamrec.export import export_onnx

    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 8)
    model = random_model(config, clips)
    onnx_file = export_onnx(model, config.clip, tmp_path / "tiny.onnx", fp16=precision == "fp16")
    reference = onnx_logits(onnx_file, clips)
    api, memory = load_tensorrt(), open_device(0)
    path = build_engine(onnx_file, precision, BatchProfile(1, 4, 8), api, memory)
    engine = TensorRTEngine(read_plan(path, api, memory), api, memory, input_specs(config.clip),
                            config.model.num_classes)
    for size in (8, 1, 5):
        logits = engine.infer({k: v[:size] for k, v in clips.items()})
        assert np.abs(logits - reference[:size]).max() <= tolerance
        assert (logits.argmax(1) == reference[:size].argmax(1)).all()
    engine.close()


def test_corrupt_and_foreign_engines_are_one_line(tmp_path):
    from streamrec.export import export_config

    config = load_config("slowfast_tiny")
    onnx_file = export_config(config, tmp_path / "tiny.onnx")
    api, memory = load_tensorrt(), open_device(0)
    path = build_engine(onnx_file, "fp32", BatchProfile(1, 2, 2), api, memory)

    record = json.loads(EngineRecord.path_for(path).read_text())
    record["key"]["tensorrt_version"] = "9.9.9"
    EngineRecord.path_for(path).write_text(json.dumps(record))
    with pytest.raises(StreamrecError, match="built with TensorRT 9.9.9"):
        read_plan(path, api, memory)

    EngineRecord.path_for(path).unlink()  # no record: TensorRT itself must refuse the damage
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(StreamrecError, match="cannot load") as err:
        TensorRTEngine(read_plan(path, api, memory), api, memory, input_specs(config.clip), 7)
    assert "\n" not in str(err.value)
