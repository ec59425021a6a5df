"""Engines: the one seam between CPU-side code and the accelerator.

Every backend serves the same contract: ``infer(inputs)`` takes uint8 RGB arrays keyed by
the clip's input names (``slow`` ``[B, Ts, H, W, 3]`` and ``fast`` ``[B, Tf, H, W, 3]``, or
``frames`` for single-pathway models) and returns float32 logits ``[B, num_classes]``.
Normalisation happens inside the engine.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from streamrec.config import Config
from streamrec.errors import StreamrecError


class Engine(Protocol):
    name: str  # backend name, for logs and benchmark tables
    max_batch: int  # largest batch one infer() call accepts

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


def create_engine(config: Config) -> Engine:
    """The engine a config asks for (``engine.backend``)."""
    backend = config.engine.backend
    if backend == "torch":
        from streamrec.backends.torch_backend import TorchEngine

        return TorchEngine.from_config(config)
    raise StreamrecError(f"engine.backend '{backend}' is not available yet; use engine.backend=torch")
