"""On a CUDA GPU with onnxruntime-gpu: the CUDA and TensorRT execution providers really run the
graph (ONNX Runtime falls back to the CPU without saying so when their libraries are missing),
on the GPU asked for, and TensorRT's provider builds once for every batch size (see gpu_support.py
for STREAMREC_REQUIRE_GPU).

    pip uninstall -y onnxruntime && pip install onnxruntime-gpu
    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamrec.backends.inputs import input_specs
from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
from streamrec.config import load_config
from gpu_support import need, onnxruntime_gpu, top1  # noqa: F401  (fixtures, used by name)
from test_export import onnx_logits, random_model, varied_clips

pytestmark = pytest.mark.usefixtures("engine_dir")


@pytest.fixture
def tiny_graph(tmp_path):
    from streamrec.export import export_onnx

    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 8)
    return config, clips, export_onnx(random_model(config, clips), config.clip, tmp_path / "tiny.onnx")


def test_cuda_provider_is_really_active(onnxruntime_gpu, tiny_graph, top1):
    config, clips, path = tiny_graph
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cuda", max_batch=8)
    assert engine.session.get_providers()[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert engine.device == "cuda:0"
    reference = onnx_logits(path, clips)
    logits = engine.infer(clips)
    assert np.abs(logits - reference).max() <= 1e-3
    top1(logits, reference, 1e-3)


def test_tensorrt_provider_builds_once_for_every_batch(onnxruntime_gpu, tiny_graph):
    need("TensorrtExecutionProvider" in onnxruntime_gpu.get_available_providers(),
         "needs ONNX Runtime's TensorRT provider (onnxruntime-gpu, with TensorRT's libraries where it can load them)")
    config, clips, path = tiny_graph
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cuda", max_batch=8)
    assert engine.session.get_providers()[0] == "TensorrtExecutionProvider"
    engine.infer({k: v[:1] for k, v in clips.items()})  # builds the engine for the whole profile
    for size in (2, 8, 5):  # a rebuild per new batch size would take seconds each
        started = time.monotonic()
        engine.infer({k: v[:size] for k, v in clips.items()})
        assert time.monotonic() - started < 3.0, f"batch {size} rebuilt the TensorRT engine"


def test_cuda_n(onnxruntime_gpu, tiny_graph):
    """With two or more GPUs, cuda:1 runs there; with one, asking for it is one line."""
    import torch

    from streamrec.errors import StreamrecError

    config, clips, path = tiny_graph
    if torch.cuda.device_count() < 2:
        with pytest.raises(StreamrecError):
            OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cuda:1", max_batch=8)
        return
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cuda:1", max_batch=8)
    assert engine.device == "cuda:1"
    np.testing.assert_allclose(engine.infer(clips), onnx_logits(path, clips), atol=1e-3, rtol=0)
