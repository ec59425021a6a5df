"""Model registry: one builder per architecture, named in a config's ``model.arch``, with what
the architecture knows about foreign checkpoints.

A builder is keyword-only and typed, ``builder(*, clip: ClipConfig, num_classes: int, **options)``,
and returns a `VideoNetwork`: its ``forward`` takes a list of float pathway tensors
``[B, 3, T, H, W]`` (``[slow, fast]`` for SlowFast, ``[frames]`` for single-pathway models;
PySlowFast's convention) and returns logits ``[B, num_classes]``; it names its classifier and
can replace it (timm's ``get_classifier`` / ``reset_classifier``). `UInt8Clips` wraps a network
in the engine contract: uint8 RGB ``[B, T, H, W, 3]`` in, normalisation inside.

Models use PySlowFast's names (or, for families PySlowFast lacks, names in its style), so PySlowFast
and streamrec checkpoints load as they are. For each other layout an arch reads (``caffe2``,
``pytorchvideo``, ``torchvision``) it registers a `KeyMap` (timm's ``checkpoint_filter_fn``), built
from `streamrec.models.checkpoint_keys`, and, where a layout stores a layer in other tensors, a
`TensorMap`; `streamrec.checkpoints` reads the files and asks `get_arch` for both.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from streamrec.config import ClipConfig, Config
from streamrec.errors import StreamrecError

KeyMap = Callable[[Sequence[str]], dict[str, "str | None"]]
"""A checkpoint file's tensor names -> the model's names (None: no layer of the arch has it)."""

TensorMap = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""A checkpoint's tensors rewritten, still in the file's own names, where its layout splits or joins
a layer differently (separate q, k, v projections for one fused qkv); applied before the key map."""


class VideoNetwork(nn.Module):
    """A registered architecture's network; its classifier is the `nn.Linear` at ``classifier_name``."""

    classifier_name: ClassVar[str]
    # True for the RoI models (`streamrec.models.roi_head`): ``forward(pathways, boxes)``, one row of
    # logits per box [N, 5] = (clip index, x1, y1, x2, y2) in input pixels; without boxes, one per clip.
    takes_boxes: ClassVar[bool] = False

    def get_classifier(self) -> nn.Linear:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised classifier for ``num_classes`` classes; everything before it is kept."""
        old = self.get_classifier()
        parent, _, name = self.classifier_name.rpartition(".")
        fresh = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        setattr(self.get_submodule(parent), name, fresh)


@dataclass(frozen=True)
class Arch:
    """A registered architecture: its builder and how it reads the reference implementations' checkpoints."""

    name: str
    builder: Callable[..., VideoNetwork]
    checkpoint_keys: Mapping[str, KeyMap] = field(default_factory=dict)  # layout (origin) -> its key map
    checkpoint_tensors: Mapping[str, TensorMap] = field(default_factory=dict)  # layout (origin) -> its tensor map
    # How an origin's models of this arch average a larger test crop's positions, where that differs
    # from the origin's usual (see `streamrec.checkpoints.HEAD_AVERAGE_BY_ORIGIN`).
    head_average_by_origin: Mapping[str, str] = field(default_factory=dict)


_ARCHS: dict[str, Arch] = {}


def register_model(name: str, *, checkpoint_keys: Mapping[str, KeyMap] | None = None,
                   checkpoint_tensors: Mapping[str, TensorMap] | None = None,
                   head_average_by_origin: Mapping[str, str] | None = None,
                   ) -> Callable[[Callable[..., VideoNetwork]], Callable[..., VideoNetwork]]:
    """Register a builder as ``model.arch: name``, with its key map (and tensor map) per checkpoint layout."""

    def decorator(builder: Callable[..., VideoNetwork]) -> Callable[..., VideoNetwork]:
        _ARCHS[name] = Arch(name, builder, dict(checkpoint_keys or {}), dict(checkpoint_tensors or {}),
                            dict(head_average_by_origin or {}))
        return builder

    return decorator


def available_models() -> list[str]:
    _import_architectures()
    return sorted(_ARCHS)


def get_arch(name: str) -> Arch:
    """The registered architecture ``name``, or a clear error naming the available ones."""
    _import_architectures()
    if name not in _ARCHS:
        raise StreamrecError(f"unknown model.arch '{name}'; available: {', '.join(available_models())}")
    return _ARCHS[name]


def build_model(config: Config) -> VideoNetwork:
    """Build the network a config describes (random weights; see checkpoints for loading)."""
    arch = get_arch(config.model.arch)
    accepted = inspect.signature(arch.builder).parameters
    unknown = [k for k in config.model.kwargs if k not in accepted or k in ("clip", "num_classes")]
    if unknown:
        valid = [k for k in accepted if k not in ("clip", "num_classes")]
        raise StreamrecError(
            f"unknown config key(s) model.{', model.'.join(unknown)} for arch '{arch.name}'; valid: {', '.join(valid)}"
        )
    return arch.builder(clip=config.clip, num_classes=config.model.num_classes, **config.model.kwargs)


class UInt8Clips(nn.Module):
    """The engine contract around a network: uint8 RGB ``[B, T, H, W, 3]`` per pathway in, logits out.

    Casting to float happens before anything touches the time axis, so exported graphs never
    slice or gather on uint8 tensors (TensorRT handles those poorly).
    """

    def __init__(self, network: nn.Module, clip: ClipConfig):
        super().__init__()
        self.network = network
        self.pathways = len(clip.input_names)
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(clip.std).view(1, 3, 1, 1, 1)), persistent=False)
        self.register_buffer("shift", (torch.tensor(clip.mean) / torch.tensor(clip.std)).view(1, 3, 1, 1, 1),
                             persistent=False)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The pathways' clips, then, for a network that `takes_boxes`, its boxes (passed on as they are)."""
        normalised = [self._normalise(x) for x in inputs[:self.pathways]]
        return self.network(normalised, *inputs[self.pathways:])

    def _normalise(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.scale.dtype).permute(0, 4, 1, 2, 3)  # B,T,H,W,3 -> B,3,T,H,W
        return x * self.scale - self.shift


def _import_architectures() -> None:
    """Importing an architecture module registers its builders."""
    from streamrec.models import mvit, r2plus1d, resnet3d, roi_head, s3d, slowfast, x3d  # noqa: F401
