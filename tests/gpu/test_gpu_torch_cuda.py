"""On a CUDA GPU: the PyTorch engine's fp32, fp16 and bf16 (folded batch norms, channels-last,
CUDA graphs) against float32 on the CPU, which has no TF32 (see gpu_support.py for
STREAMREC_REQUIRE_GPU).

Bounds per model and precision are twice the error emulated on the CPU by rounding to each
format (SlowFast R50 8x8: fp16 0.069, bf16 0.42; TF32 would have been 0.059, which fp32 must
not show); top-1 is checked on the shipped trained model's fresh procedural clips, where it
must agree on every clip whose lead exceeds twice the bound.

    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamrec.backends.inputs import input_specs
from streamrec.config import load_config, load_labels
from streamrec.sampling import split_pathways
from gpu_support import cuda_torch, top1  # noqa: F401  (fixtures, used by name)
from test_export import random_model, torch_logits, varied_clips

pytestmark = pytest.mark.usefixtures("engine_dir")

BOUNDS = {  # max |logit difference| from CPU float32
    ("slowfast_tiny", "fp32"): 1e-3, ("slowfast_tiny", "fp16"): 0.02, ("slowfast_tiny", "bf16"): 0.15,
    ("slowfast_r50_8x8", "fp32"): 5e-3, ("slowfast_r50_8x8", "fp16"): 0.15, ("slowfast_r50_8x8", "bf16"): 1.0,
}


def engine_for(torch, model, config, precision, **kwargs):
    from streamrec.backends.torch_backend import TorchEngine

    return TorchEngine(model, input_specs(config.clip), torch.device(kwargs.pop("device", "cuda")), precision,
                       max_batch=8, **kwargs)


@pytest.mark.parametrize("name", ["slowfast_tiny", "slowfast_r50_8x8"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_engine_matches_float32(cuda_torch, name, precision):
    torch = cuda_torch
    config = load_config(name)
    clips = varied_clips(config.clip, 8)
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)  # float32 on the CPU, batch norms unfolded
    engine = engine_for(torch, model, config, precision)
    if precision != "fp32":
        conv = next(m for m in engine.module.modules() if isinstance(m, torch.nn.Conv3d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert sorted(engine.run.graphs) == [1, 2, 4, 8]  # every bucket captured when the engine was made
    bound = BOUNDS[name, precision]
    for size in (8, 3, 8, 1):  # buckets 8 and 4 (3 rows of 4), 8 again, then 1
        logits = engine.infer({k: v[:size] for k, v in clips.items()})
        assert np.abs(logits - reference[:size]).max() <= bound, (precision, np.abs(logits - reference[:size]).max())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_top1_of_the_trained_model_on_fresh_clips(cuda_torch, precision, top1):
    from streamrec.checkpoints import load_model
    from streamrec.training import ProceduralVideos, evaluation_clips

    config = load_config("slowfast_tiny")
    frames, _ = evaluation_clips(ProceduralVideos(load_labels(config), count=32, seed=31337, split=2), config.clip)
    clips = split_pathways(config.clip, frames)
    model = load_model(config)
    reference = torch_logits(model, config.clip, clips)
    engine = engine_for(cuda_torch, model, config, precision)
    logits = np.concatenate([engine.infer({k: v[i:i + 8] for k, v in clips.items()}) for i in range(0, 32, 8)])
    bound = BOUNDS["slowfast_tiny", precision]
    assert np.abs(logits - reference).max() <= bound
    top1(logits, reference, bound)


def test_graph_replays_read_new_data_each_call_and_match_eager(cuda_torch):
    torch = cuda_torch
    config = load_config("slowfast_tiny")
    model = random_model(config, varied_clips(config.clip, 8))
    graphs = engine_for(torch, model, config, "fp16")
    eager = engine_for(torch, model, config, "fp16", cuda_graphs=False)
    outputs = []
    for seed in range(4):  # the same buffers, new pixels each call
        batch = varied_clips(config.clip, 5, seed=seed + 10)
        outputs.append(graphs.infer(batch))
        np.testing.assert_allclose(outputs[-1], eager.infer(batch), atol=1e-2, rtol=0)
    assert all(np.abs(a - b).max() > 1e-2 for a, b in zip(outputs, outputs[1:])), "a replay returned stale logits"


def test_calls_from_a_worker_thread(cuda_torch):
    torch = cuda_torch
    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 4)
    engine = engine_for(torch, random_model(config, clips), config, "fp32")
    expected = engine.infer(clips)
    results = []
    thread = threading.Thread(target=lambda: results.append(engine.infer(clips)))
    thread.start()
    thread.join(120)
    np.testing.assert_allclose(results[0], expected, atol=1e-5, rtol=0)


def test_cuda_n_runs_on_that_gpu(cuda_torch):
    """With two or more GPUs, cuda:1 computes on GPU 1 what cuda:0 does (captured and replayed
    there, from any thread); with one, asking for cuda:1 is one line."""
    torch = cuda_torch
    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 4)
    model = random_model(config, clips)
    if torch.cuda.device_count() < 2:
        from streamrec.backends.torch_backend import pick_device
        from streamrec.errors import StreamrecError

        with pytest.raises(StreamrecError, match="engine.device=cuda:1 but PyTorch sees 1 CUDA GPU"):
            pick_device("cuda:1")
        return
    first = engine_for(torch, model, config, "fp16", device="cuda:0")
    second = engine_for(torch, model, config, "fp16", device="cuda:1")
    assert second.device == "cuda:1" and next(second.module.parameters()).device.index == 1
    results = []
    thread = threading.Thread(target=lambda: results.append(second.infer(clips)))
    thread.start()
    thread.join(120)
    np.testing.assert_allclose(results[0], first.infer(clips), atol=1e-2, rtol=0)
