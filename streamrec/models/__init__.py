"""Model registry: one builder per architecture, named in a config's ``model.arch``, with what
the architecture knows about foreign checkpoints.

A builder is keyword-only and typed, ``builder(*, clip: ClipConfig, num_classes: int, **options)``
(a config's ``model`` options, checked against those types and `BUILDER_RANGES` before it runs),
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

import collections.abc
import inspect
import types
import typing
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
    # Its builder's arguments' ranges where they differ from `BUILDER_RANGES` (by name).
    ranges: Mapping[str, "Range | Rows"] = field(default_factory=dict)


_ARCHS: dict[str, Arch] = {}


def register_model(name: str, *, checkpoint_keys: Mapping[str, KeyMap] | None = None,
                   checkpoint_tensors: Mapping[str, TensorMap] | None = None,
                   head_average_by_origin: Mapping[str, str] | None = None,
                   ranges: "Mapping[str, Range | Rows] | None" = None,
                   ) -> Callable[[Callable[..., VideoNetwork]], Callable[..., VideoNetwork]]:
    """Register a builder as ``model.arch: name``, with its key map (and tensor map) per checkpoint layout."""

    def decorator(builder: Callable[..., VideoNetwork]) -> Callable[..., VideoNetwork]:
        _ARCHS[name] = Arch(name, builder, dict(checkpoint_keys or {}), dict(checkpoint_tensors or {}),
                            dict(head_average_by_origin or {}), dict(ranges or {}))
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
    check_builder_options(arch, config.model.kwargs)
    return arch.builder(clip=config.clip, num_classes=config.model.num_classes, **config.model.kwargs)


# --------------------------------------------------------------------------- builder arguments


@dataclass(frozen=True)
class Range:
    """The numbers a builder argument may hold: the argument itself, or each number in its lists. Both
    ends are included unless open; ``odd``: odd numbers only (a temporal kernel padded by half of it
    keeps a clip's length only when odd); ``length``: a list argument's number of entries."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    odd: bool = False
    length: int | None = None
    name: str = ""  # what one number is, where a row holds several (`Rows`)

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and (not self.odd or value % 2 == 1)  # a nan is neither above nor below

    def describe(self) -> str:
        low = f"above {_number(self.low)}" if self.low_open else None
        high = f"below {_number(self.high)}" if self.high_open else None
        if low or high:
            text = " and ".join([low or f"at least {_number(self.low)}", high or f"at most {_number(self.high)}"])
        else:
            text = f"from {_number(self.low)} to {_number(self.high)}"
        return f"odd, {text}" if self.odd else text


@dataclass(frozen=True)
class Rows:
    """A list of rows of numbers, ``columns`` naming and bounding each position (``[block, factor]``)."""

    columns: tuple[Range, ...]

    @property
    def layout(self) -> str:
        return f"[{', '.join(column.name for column in self.columns)}]"


KERNEL = Range(1, 15, odd=True)
DROPOUT = Range(0, 1, high_open=True)
CROP = Range(16, 4096)  # as clip.crop_size
# Every numeric builder argument's values, by name, for every arch (an arch registers its own
# `register_model(ranges=...)` where a name means something else to it). Checked, with each
# argument's type (the builder's annotations), before a builder runs: a value outside is one line
# naming it, never a traceback from deep inside torch or a network that quietly computes nothing.
# Consistency between arguments (a SlowFast's Fast pathway keeps at least one channel) is the
# builder's to check.
BUILDER_RANGES: dict[str, Range | Rows] = {
    # ResNets, SlowFast, R(2+1)D: a standard depth or per-stage block counts (the builder checks which);
    # MViT: its blocks
    "depth": Range(1, 1000),
    "width": Range(1, 4096),  # channels
    "beta_inv": Range(1, 64),  # Slow/Fast channel ratio
    "fusion_channel_ratio": Range(1, 64),
    "fusion_kernel": KERNEL,
    "stem_temporal_kernels": Range(1, 15, odd=True, length=2),  # [slow, fast]
    "stem_temporal_kernel": KERNEL,
    "stem_spatial_kernel": Range(1, 15),
    "temporal_kernels": KERNEL,  # per stage (and pathway) block patterns
    "temporal_blocks": Range(0, 1000),  # per stage (and pathway): blocks keeping the temporal kernel
    "res2_temporal_pool": Range(1, 8),
    "spatial_strides": Range(1, 4, length=4),
    "temporal_strides": Range(1, 4, length=4),
    "b_temporal_kernel": KERNEL,
    "groups": Range(1, 1024),
    "nonlocal_blocks": Range(0, 1000),  # per stage, block indices
    "nonlocal_pool": Range(1, 8, length=3),
    "res5_spatial_stride": Range(1, 2),
    "res5_dilation": Range(1, 8),
    "roi_resolution": Range(1, 64),
    "stem_mid_channels": Range(1, 4096),
    "head_frames": Range(1, 128),
    "width_factor": Range(0, 64, low_open=True),
    "depth_factor": Range(0, 64, low_open=True),
    "stem_width": Range(1, 4096),
    "bottleneck_factor": Range(0, 64, low_open=True),
    "head_width": Range(1, 65536),
    "se_ratio": Range(0, 4),  # 0: no squeeze-excitation
    "embed_dim": Range(1, 8192),
    "num_heads": Range(1, 1024),
    "mlp_ratio": Range(0, 64, low_open=True),
    "patch_kernel": Range(1, 63, length=3),
    "patch_stride": Range(1, 64, length=3),
    "patch_padding": Range(0, 64, length=3),
    "dim_mul": Rows((Range(0, 1000, name="block"), Range(0, 64, low_open=True, name="factor"))),
    "head_mul": Rows((Range(0, 1000, name="block"), Range(0, 64, low_open=True, name="factor"))),
    "pool_q_stride": Rows((Range(0, 1000, name="block"), *(Range(1, 64, name=n) for n in ("t", "h", "w")))),
    "pool_kv_stride_adaptive": Range(1, 64, length=3),
    "pool_kvq_kernel": Range(1, 63, length=3),
    "pool_norm_eps": Range(0, 1, low_open=True),
    "dropout": DROPOUT,
    "train_crop_size": CROP,
}


def builder_ranges(arch: Arch) -> dict[str, Range | Rows]:
    return {**BUILDER_RANGES, **arch.ranges}


def check_builder_options(arch: Arch, options: Mapping[str, object]) -> None:
    """Each of a config's ``model`` options (``--set model.KEY=VALUE``) an argument of the arch's builder,
    of its type and in its range (`BUILDER_RANGES`), or a `StreamrecError` line naming the key, what
    it takes and the value."""
    accepted = inspect.signature(arch.builder).parameters
    unknown = [k for k in options if k not in accepted or k in ("clip", "num_classes")]
    if unknown:
        valid = [k for k in accepted if k not in ("clip", "num_classes")]
        nested = " (options sit directly under model:, e.g. model.width, not model.kwargs.width)" if "kwargs" in unknown else ""
        raise StreamrecError(
            f"unknown config key(s) model.{', model.'.join(unknown)} for arch '{arch.name}'; valid: {', '.join(valid)}"
            f"{nested}"
        )
    hints = typing.get_type_hints(arch.builder)
    ranges = builder_ranges(arch)
    for key, value in options.items():
        if not _is_a(value, hints[key]):
            raise StreamrecError(f"model.{key} must be {_kind(hints[key])}, got {_shown(value)}")
        if key in ranges:
            problem = _range_problem(ranges[key], value)
            if problem:
                raise StreamrecError(f"model.{key} {problem}")


def _range_problem(spec: Range | Rows, value: object) -> str | None:
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(spec, Rows):
        for row in value:  # type: ignore[attr-defined]
            if not isinstance(row, (list, tuple)) or len(row) != len(spec.columns):
                return f"takes rows {spec.layout}, got {_shown(row)} in {_shown(value)}"
            for column, number in zip(spec.columns, row):
                if not column.allows(number):
                    return (f"rows are {spec.layout}, each {column.name} {column.describe()}; got {column.name} "
                            f"{_shown(number)} in {_shown(row)}")
        return None
    if isinstance(value, (int, float)):
        return None if spec.allows(value) else f"must be {spec.describe()}, got {_shown(value)}"
    if spec.length is not None and len(value) != spec.length:  # type: ignore[arg-type]
        return f"needs {spec.length} values, got {_shown(value)}"
    bad = next((n for n in _numbers(value) if not spec.allows(n)), None)
    if bad is not None:
        return f"values must each be {spec.describe()}, got {_shown(bad)} in {_shown(value)}"
    return None


def _numbers(value: object) -> typing.Iterator[float]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _is_a(value: object, hint: object) -> bool:
    """Whether a config value fits a builder annotation (int, float, bool, str, Sequence[...], unions)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, (list, tuple)) and all(_is_a(item, args[0] if args else object) for item in value)
    return True  # an annotation this check does not know: the builder's own to check


def _kind(hint: object, plural: bool = False) -> str:
    """What an annotation takes, in words: ``a whole number``, ``a list of lists of numbers``, ``... or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = " or ".join(_kind(arg, plural) for arg in args if arg is not type(None))
        return kinds + (" or null" if type(None) in args else "")
    if origin in (collections.abc.Sequence, list, tuple):
        inner = _kind(args[0], plural=True) if args else "values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    words = {int: ("a whole number", "whole numbers"), float: ("a number", "numbers"), bool: ("true or false", "true or false values"),
             str: ("a name", "names")}.get(hint, (str(hint), str(hint)))  # type: ignore[call-overload]
    return words[plural]


def _shown(value: object) -> str:
    """A value as written in YAML (null, true, [1, 2])."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}" if abs(value) >= 1e16 else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _number(value: float) -> str:
    return f"{value:g}"


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
