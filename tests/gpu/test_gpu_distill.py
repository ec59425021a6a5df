"""On a CUDA GPU: ``train --stream-from --device cuda`` distils as on the CPU (the same sequences,
the same starting weights, so the same held-out figures before training and nearly the same
losses; cuDNN's TF32 convolutions allow a few per cent), and writes a checkpoint that loads on
the CPU.

    .venv/bin/python -m pytest -q tests/gpu
"""

from __future__ import annotations

import json

import numpy as np

from gpu_support import cuda_torch  # noqa: F401  (a fixture, used by name)
from streamrec.checkpoints import load_model
from streamrec.config import load_config
from streamrec.training.distill import distill


def test_distillation_on_cuda_follows_the_cpu(cuda_torch, tmp_path):
    config = load_config("slowfast_tiny")
    runs = {device: distill(config, "procedural", tmp_path / device, steps=3, batch=2, units=6, lr=3e-4, seed=0,
                            held_out=2, log_every=1, device=device) for device in ("cpu", "cuda")}
    cpu, cuda = runs["cpu"], runs["cuda"]
    assert cuda["device"].startswith("cuda")
    assert np.isclose(cuda["held_out"]["before"]["kl"], cpu["held_out"]["before"]["kl"], rtol=0.05, atol=1e-3)
    assert np.allclose(cuda["losses"], cpu["losses"], rtol=0.05, atol=1e-3), (cpu["losses"], cuda["losses"])
    recorded = json.loads((tmp_path / "cuda" / "distill.json").read_text())
    assert recorded["device"] == cuda["device"]
    assert load_model(load_config(tmp_path / "cuda" / "config.yaml")) is not None  # CPU tensors in the checkpoint
