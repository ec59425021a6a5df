"""Model registry: one builder per architecture, named in a config's ``model.arch``.

A builder has the signature ``builder(clip: ClipConfig, num_classes: int, **kwargs)`` and
returns a network whose ``forward`` takes a list of float pathway tensors ``[B, 3, T, H, W]``
(``[slow, fast]`` for SlowFast, ``[frames]`` for single-pathway models; PySlowFast's
convention) and returns logits ``[B, num_classes]``. `UInt8Clips` wraps a network in the
engine contract: uint8 RGB ``[B, T, H, W, 3]`` in, normalisation inside.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from streamrec.config import ClipConfig, Config
from streamrec.errors import StreamrecError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[name] = builder
        return builder

    return decorator


def available_models() -> list[str]:
    _import_architectures()
    return sorted(_BUILDERS)


def build_model(config: Config) -> nn.Module:
    """Build the network a config describes (random weights; see checkpoints for loading)."""
    _import_architectures()
    arch = config.model.arch
    if arch not in _BUILDERS:
        raise StreamrecError(f"unknown model.arch '{arch}'; available: {', '.join(available_models())}")
    builder = _BUILDERS[arch]
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in config.model.kwargs if k not in accepted or k in ("clip", "num_classes")]
    if unknown:
        valid = [k for k in accepted if k not in ("clip", "num_classes")]
        raise StreamrecError(
            f"unknown config key(s) model.{', model.'.join(unknown)} for arch '{arch}'; valid: {', '.join(valid)}"
        )
    return builder(clip=config.clip, num_classes=config.model.num_classes, **config.model.kwargs)


class UInt8Clips(nn.Module):
    """The engine contract around a network: uint8 RGB ``[B, T, H, W, 3]`` per pathway in, logits out.

    Casting to float happens before anything touches the time axis, so exported graphs never
    slice or gather on uint8 tensors (TensorRT handles those poorly).
    """

    def __init__(self, network: nn.Module, clip: ClipConfig):
        super().__init__()
        self.network = network
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(clip.std).view(1, 3, 1, 1, 1)), persistent=False)
        self.register_buffer("shift", (torch.tensor(clip.mean) / torch.tensor(clip.std)).view(1, 3, 1, 1, 1),
                             persistent=False)

    def forward(self, *pathways: torch.Tensor) -> torch.Tensor:
        normalised = [self._normalise(x) for x in pathways]
        return self.network(normalised)

    def _normalise(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.scale.dtype).permute(0, 4, 1, 2, 3)  # B,T,H,W,3 -> B,3,T,H,W
        return x * self.scale - self.shift


def _import_architectures() -> None:
    """Importing an architecture module registers its builders."""
    from streamrec.models import resnet3d, slowfast, x3d  # noqa: F401
