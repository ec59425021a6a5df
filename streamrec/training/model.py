"""The network during training: clips through it as the engine feeds them, predictions, and
the weights a fine-tuning run starts from."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from streamrec.checkpoints import load_checkpoint, load_state_dict_strictly
from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips
from streamrec.sampling import split_pathways

HEAD_PREFIX = "head.projection."  # the classifier of every registered arch (PySlowFast's name)


def forward(model: UInt8Clips, clip: ClipConfig, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Logits for a batch of Fast-rate clips ``uint8 [B, T, H, W, 3]``, split into pathways like the engine does."""
    pathways = split_pathways(clip, np.asarray(frames))
    return model(*(torch.from_numpy(np.ascontiguousarray(pathways[name])) for name in clip.input_names))


@torch.inference_mode()
def predict(model: UInt8Clips, clip: ClipConfig, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    model.eval()
    return np.concatenate([forward(model, clip, clips[i:i + batch_size]).numpy()
                           for i in range(0, len(clips), batch_size)])


def initial_weights(network: nn.Module, path: str, new_head: bool, labels: list[str]) -> None:
    """Fine-tuning: a checkpoint's weights (any format `load_checkpoint` reads), with a fresh classifier when ``new_head``."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.state_dict
    if new_head:
        fresh = network.state_dict()
        state = {**{k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)},
                 **{k: v for k, v in fresh.items() if k.startswith(HEAD_PREFIX)}}
    elif checkpoint.num_classes != len(labels) or checkpoint.labels not in (None, labels):
        raise StreamrecError(f"checkpoint {path} was trained on other classes ({checkpoint.num_classes}) than the "
                             f"data's ({len(labels)}); pass --new-head to train a new classifier")
    load_state_dict_strictly(network, state, path)
