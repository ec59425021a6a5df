"""The network during training: clips through it as the engine feeds them, predictions, and
the weights a fine-tuning run starts from."""

from __future__ import annotations

import numpy as np
import torch

from streamrec.checkpoints import classifier_classes, load_checkpoint, load_state_dict_strictly, model_state_dict
from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips, VideoNetwork
from streamrec.sampling import split_pathways


def forward(model: UInt8Clips, clip: ClipConfig, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Logits for a batch of Fast-rate clips ``uint8 [B, T, H, W, 3]``, split into pathways like the engine does."""
    pathways = split_pathways(clip, np.asarray(frames))
    return model(*(torch.from_numpy(np.ascontiguousarray(pathways[name])) for name in clip.input_names))


@torch.inference_mode()
def predict(model: UInt8Clips, clip: ClipConfig, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    model.eval()
    return np.concatenate([forward(model, clip, clips[i:i + batch_size]).numpy()
                           for i in range(0, len(clips), batch_size)])


def initial_weights(network: VideoNetwork, path: str, *, arch: str, new_head: bool, labels: list[str]) -> None:
    """Fine-tuning: a checkpoint's weights (any format `load_checkpoint` reads); with ``new_head``, a
    fresh classifier for ``labels`` (`VideoNetwork.reset_classifier`) after all of them loaded."""
    checkpoint = load_checkpoint(path)
    state = model_state_dict(checkpoint, network, arch, path)
    classes = classifier_classes(network, state)
    if new_head:
        if classes is not None:
            network.reset_classifier(classes)  # the checkpoint's classifier, so every tensor loads strictly
        load_state_dict_strictly(network, state, path)
        network.reset_classifier(len(labels))
        return
    if classes != len(labels) or checkpoint.labels not in (None, labels):
        raise StreamrecError(f"checkpoint {path} was trained on other classes ({classes}) than the "
                             f"data's ({len(labels)}); pass --new-head to train a new classifier")
    load_state_dict_strictly(network, state, path)
