"""PyTorch engine: the model definition run directly (CPU, or CUDA when present)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from streamrec.config import Config
from streamrec.errors import StreamrecError


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise StreamrecError("engine.device=cuda but no CUDA GPU is visible to PyTorch; use engine.device=cpu")
    return torch.device(requested)


class TorchEngine:
    name = "torch"

    def __init__(self, module: torch.nn.Module, input_names: tuple[str, ...], device: torch.device,
                 max_batch: int = 64):
        self.module = module.eval().to(device)
        self.input_names = input_names
        self.device = device
        self.max_batch = max_batch

    @classmethod
    def from_config(cls, config: Config) -> "TorchEngine":
        from streamrec.checkpoints import load_model

        if config.engine.threads > 0:
            torch.set_num_threads(config.engine.threads)
        module = load_model(config)
        return cls(module, config.clip.input_names, pick_device(config.engine.device))

    @torch.inference_mode()
    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device) for name in self.input_names]
        return self.module(*tensors).float().cpu().numpy()
