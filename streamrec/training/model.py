"""The network during training: clips through it as the engine feeds them, predictions, and
the weights a fine-tuning run starts from."""

from __future__ import annotations

import numpy as np
import torch

from streamrec.checkpoints import classifier_classes, load_checkpoint, load_state_dict_strictly, model_state_dict
from streamrec.config import ClipConfig, Config
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips, VideoNetwork, build_model
from streamrec.sampling import split_pathways


def takes_boxes(config: Config) -> bool:
    """Whether the config's network classifies person boxes (an RoI head) rather than whole clips.

    Asked of a network built on the meta device: no memory, no time, no random numbers drawn.
    """
    with torch.device("meta"):
        return build_model(config).takes_boxes


def forward(model: UInt8Clips, clip: ClipConfig, frames: torch.Tensor | np.ndarray,
            boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Logits for a batch of Fast-rate clips ``uint8 [B, T, H, W, 3]``, split into pathways like the engine
    does; for an RoI model, ``boxes [N, 5]`` too and a row of logits per box."""
    pathways = split_pathways(clip, np.asarray(frames))
    inputs = [torch.from_numpy(np.ascontiguousarray(pathways[name])) for name in clip.input_names]
    return model(*inputs) if boxes is None else model(*inputs, boxes)


@torch.inference_mode()
def predict(model: UInt8Clips, clip: ClipConfig, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    model.eval()
    return np.concatenate([forward(model, clip, clips[i:i + batch_size]).numpy()
                           for i in range(0, len(clips), batch_size)])


@torch.inference_mode()
def predict_boxes(model: UInt8Clips, clip: ClipConfig, clips: np.ndarray, boxes: list[np.ndarray],
                  batch_size: int = 16) -> np.ndarray:
    """Logits ``[sum K_i, C]`` for each clip's boxes ``[K_i, 4]`` (input pixels), clip after clip."""
    model.eval()
    return np.concatenate([forward(model, clip, clips[i:i + batch_size], engine_boxes(boxes[i:i + batch_size])).numpy()
                           for i in range(0, len(clips), batch_size)])


def engine_boxes(per_clip: list[np.ndarray]) -> torch.Tensor:
    """Each clip's boxes ``[K_i, 4]`` as the engine takes them: ``[N, 5]`` rows of (clip index, x1, y1, x2, y2)."""
    rows = [np.hstack([np.full((len(b), 1), k, np.float32), np.asarray(b, np.float32).reshape(-1, 4)])
            for k, b in enumerate(per_clip)]
    return torch.from_numpy(np.concatenate(rows))


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
