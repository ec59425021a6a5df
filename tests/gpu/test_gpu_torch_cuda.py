"""On a CUDA GPU: the PyTorch engine's fp16/bf16, channels-last and CUDA graphs against float32
(skipped without one). The issue's bound: at most 1e-2 max abs on logits, top-1 unchanged.

    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # test_export's helpers

from streamrec.backends.inputs import input_specs  # noqa: E402
from streamrec.backends.torch_backend import TorchEngine  # noqa: E402
from streamrec.config import load_config  # noqa: E402
from test_export import random_model, torch_logits, varied_clips  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TOLERANCE = 1e-2


@pytest.mark.parametrize("name", ["slowfast_tiny", "slowfast_r50_8x8"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_engine_matches_float32(name, precision):
    config = load_config(name)
    clips = varied_clips(config.clip, 8)
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)  # float32 on the CPU, batch norms unfolded
    engine = TorchEngine(model, input_specs(config.clip), torch.device("cuda"), precision, max_batch=8)
    if precision != "fp32":
        conv = next(m for m in engine.module.modules() if isinstance(m, torch.nn.Conv3d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    for size in (8, 3, 8):  # two graphs captured, the first replayed again
        batch = {k: v[:size] for k, v in clips.items()}
        logits = engine.infer(batch)
        assert np.abs(logits - reference[:size]).max() <= TOLERANCE, precision
        assert (logits.argmax(1) == reference[:size].argmax(1)).all()
    assert sorted(engine.run.graphs) == [3, 8]
