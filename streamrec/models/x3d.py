"""X3D (Feichtenhofer, 2020): a narrow 3D ResNet of depthwise 3x3x3 bottlenecks with
squeeze-excitation, expanded in width and depth from a tiny base (X3D-XS, -S, -M share one
network and differ in clip length and crop).

Module names follow PySlowFast's X3D (``s1.pathway0_stem.conv_xy``, ``s2.pathway0_res0.branch2.se.fc1``,
``head.lin_5``); Swish is written as `nn.SiLU`, which exports to ONNX.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import VideoNetwork, register_model
from streamrec.models.checkpoint_keys import PyTorchVideoNames, either, pytorchvideo_keys, rename, renamed_keys
from streamrec.models.resnet3d import (
    RESNET_PYTORCHVIDEO_NAMES,
    PathwayStems,
    ResBlock,
    ResStage,
    average_positions,
    batch_norm,
    check_head_average,
    training_crop,
)

BASE_STAGE_DEPTHS = (1, 2, 5, 3)  # res2..res5 blocks before the depth factor


def round_width(width: float, multiplier: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor``, never below 90% of the scaled value."""
    scaled = width * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class X3DStem(nn.Module):
    """1x3x3 convolution with spatial stride 2, then a depthwise Tx1x1 convolution."""

    def __init__(self, out_channels: int, temporal_kernel: int):
        super().__init__()
        self.conv_xy = nn.Conv3d(3, out_channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv = nn.Conv3d(out_channels, out_channels, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0),
                              groups=out_channels, bias=False)
        self.bn = batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.conv_xy(x))))


class SqueezeExcite(nn.Module):
    """Channel gates from the clip-wide average: 1x1x1 conv, ReLU, 1x1x1 conv, sigmoid."""

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        reduced = round_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, reduced, 1)
        self.fc1_act = nn.ReLU()
        self.fc2 = nn.Conv3d(reduced, channels, 1)
        self.fc2_sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * self.fc2_sig(self.fc2(self.fc1_act(self.fc1(squeezed))))


class X3DBottleneck(nn.Module):
    """1x1x1 -> depthwise 3x3x3 (spatial stride here) -> [squeeze-excite] -> SiLU -> 1x1x1."""

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int, stride: int, se_ratio: float):
        super().__init__()
        self.a = nn.Conv3d(in_channels, inner_channels, 1, bias=False)
        self.a_bn = batch_norm(inner_channels)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(inner_channels, inner_channels, 3, stride=(1, stride, stride), padding=1,
                           groups=inner_channels, bias=False)
        self.b_bn = batch_norm(inner_channels)
        self.se = SqueezeExcite(inner_channels, se_ratio) if se_ratio > 0 else None
        self.b_relu = nn.SiLU()
        self.c = nn.Conv3d(inner_channels, out_channels, 1, bias=False)
        self.c_bn = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_bn(self.b(x))
        if self.se is not None:
            x = self.se(x)
        return self.c_bn(self.c(self.b_relu(x)))


class X3DHead(nn.Module):
    """1x1x1 conv to the inner width, average-pool, 1x1x1 conv to ``head_width``, linear projection.

    Pooling and ``average`` work as in `streamrec.models.resnet3d.Head`.
    """

    def __init__(self, in_channels: int, inner_channels: int, head_width: int, num_classes: int,
                 pool_size: tuple[int, int, int], dropout: float, average: str):
        super().__init__()
        self.conv_5 = nn.Conv3d(in_channels, inner_channels, 1, bias=False)
        self.conv_5_bn = batch_norm(inner_channels)
        self.conv_5_relu = nn.ReLU(inplace=True)
        self.avg_pool = nn.AvgPool3d(pool_size, stride=1)
        self.lin_5 = nn.Conv3d(inner_channels, head_width, 1, bias=False)
        self.lin_5_relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(head_width, num_classes)
        self.average = check_head_average(average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv_5_relu(self.conv_5_bn(self.conv_5(pathways[0])))
        x = self.lin_5_relu(self.lin_5(self.avg_pool(x)))
        logits = self.projection(self.dropout(x.permute(0, 2, 3, 4, 1)))
        return average_positions(logits, self.average)


# PyTorchVideo's X3D: norm_b is Sequential(BatchNorm, SqueezeExcitation(block=[conv, relu, conv,
# sigmoid])); the stem names its 1x3x3 conv conv_t and its depthwise Tx1x1 conv conv_xy (sic).
X3D_PYTORCHVIDEO_NAMES = PyTorchVideoNames(
    res_block={**RESNET_PYTORCHVIDEO_NAMES.res_block, "branch2.norm_b.0": "branch2.b_bn",
               "branch2.norm_b.1.block.0": "branch2.se.fc1", "branch2.norm_b.1.block.2": "branch2.se.fc2"},
    outer={"norm": "bn", "conv.conv_t": "conv_xy", "conv.conv_xy": "conv", "pool.pre_conv": "conv_5",
           "pool.pre_norm": "conv_5_bn", "pool.post_conv": "lin_5", "proj": "projection"},
)


# PyTorchVideo's mobile-CPU X3D (``efficient_x3d_xs``/``_s``, accelerator/mobile_cpu/efficient_x3d.py):
# the same network (its shortcuts always normalised: stride_shortcut_bn), its convolutions wrapped
# in ``kernel.conv``/``kernel.bn`` and named by PySlowFast's stage and block.
_MOBILE_BLOCK = r"(s\d\.pathway0_res\d+)"
_MOBILE_UNITS = {"conv_0": "a", "conv_1": "b", "conv_2": "c"}
X3D_MOBILE_RENAMES = (
    rename(r"s1\.pathway0_stem_conv_xy\.kernel\.conv\.weight", "s1.pathway0_stem.conv_xy.weight"),
    rename(r"s1\.pathway0_stem_conv\.kernel\.conv\.weight", "s1.pathway0_stem.conv.weight"),
    rename(r"s1\.pathway0_stem_conv\.kernel\.bn\.(\w+)", r"s1.pathway0_stem.bn.\1"),
    rename(rf"{_MOBILE_BLOCK}\._res_proj\.kernel\.conv\.weight", r"\1.branch1.weight"),
    rename(rf"{_MOBILE_BLOCK}\._res_proj\.kernel\.bn\.(\w+)", r"\1.branch1_bn.\2"),
    rename(rf"{_MOBILE_BLOCK}\.layers\.(conv_[012])\.kernel\.conv\.weight",
           lambda m: f"{m[1]}.branch2.{_MOBILE_UNITS[m[2]]}.weight"),
    rename(rf"{_MOBILE_BLOCK}\.layers\.(conv_[012])\.kernel\.bn\.(\w+)",
           lambda m: f"{m[1]}.branch2.{_MOBILE_UNITS[m[2]]}_bn.{m[3]}"),
    rename(rf"{_MOBILE_BLOCK}\.layers\.se\.se\.block\.([02])\.(weight|bias)",
           lambda m: f"{m[1]}.branch2.se.fc{1 if m[2] == '0' else 2}.{m[3]}"),
    rename(r"head\.conv_5\.kernel\.conv\.weight", "head.conv_5.weight"),
    rename(r"head\.conv_5\.kernel\.bn\.(\w+)", r"head.conv_5_bn.\1"),
    rename(r"head\.lin_5\.kernel\.conv\.weight", "head.lin_5.weight"),
    rename(r"projection\.model\.(weight|bias)", r"head.projection.\1"),
)


class X3D(VideoNetwork):
    """Arguments as in the `x3d` builder, which holds the defaults."""

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, frames: int, train_crop_size: int, width_factor: float, depth_factor: float,
                 stem_width: int, bottleneck_factor: float, head_width: int, se_ratio: float, stem_temporal_kernel: int,
                 stride_shortcut_bn: bool, dropout: float, head_average: str):
        super().__init__()
        stem_channels = round_width(stem_width, width_factor)
        self.s1 = PathwayStems([X3DStem(stem_channels, stem_temporal_kernel)])
        in_channels = stem_channels
        base_width = stem_width
        for stage, base_depth in enumerate(BASE_STAGE_DEPTHS):
            base_width = round_width(base_width, 2.0) if stage > 0 else stem_width
            out_channels = round_width(base_width, width_factor)
            inner_channels = int(bottleneck_factor * out_channels)
            shortcut_bn = stride_shortcut_bn or in_channels != out_channels
            blocks = [
                ResBlock(in_channels if i == 0 else out_channels, out_channels, 2 if i == 0 else 1,
                         X3DBottleneck(in_channels if i == 0 else out_channels, inner_channels, out_channels,
                                       2 if i == 0 else 1, se_ratio if i % 2 == 0 else 0.0),
                         shortcut_bn)
                for i in range(math.ceil(depth_factor * base_depth))
            ]
            self.add_module(f"s{stage + 2}", ResStage([blocks]))
            in_channels = out_channels
        side = math.ceil(train_crop_size / 32)
        self.head = X3DHead(out_channels, inner_channels, head_width, num_classes, (frames, side, side), dropout,
                            head_average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.s1(pathways)
        for stage in (self.s2, self.s3, self.s4, self.s5):
            x = stage(x)
        return self.head(x)


@register_model("x3d", checkpoint_keys={"pytorchvideo": either(pytorchvideo_keys(X3D_PYTORCHVIDEO_NAMES),
                                                                renamed_keys(X3D_MOBILE_RENAMES))},
                head_average_by_origin={"pytorchvideo": "softmax"})  # PyTorchVideo's X3D builders end in a softmax
def x3d(
    *,
    clip: ClipConfig,
    num_classes: int,
    width_factor: float = 2.0,
    depth_factor: float = 2.2,
    stem_width: int = 12,
    bottleneck_factor: float = 2.25,
    head_width: int = 2048,
    se_ratio: float = 0.0625,
    stem_temporal_kernel: int = 5,
    stride_shortcut_bn: bool = False,
    dropout: float = 0.5,
    head_average: str = "softmax",
    train_crop_size: int | None = None,
) -> X3D:
    """X3D for a clip contract; the defaults are X3D-XS/S/M (X3D-L: ``depth_factor: 5.0``; PyTorchVideo's
    mobile X3D-XS/S: ``stride_shortcut_bn``).

    - ``width_factor``, ``depth_factor``: X3D's expansions of the base widths and of the
      stage depths (1, 2, 5, 3); ``stem_width``: the base width (X3D's DIM_C1);
    - ``bottleneck_factor``: inner width / block width; ``head_width``: the head's last conv (DIM_C5);
    - ``se_ratio``: squeeze-excitation width, on every other block (0 disables);
    - ``stride_shortcut_bn``: normalise a shortcut that strides without changing width (res2's first
      block). PySlowFast does, PyTorchVideo does not (default); set it for PySlowFast X3D checkpoints;
    - ``head_average``: as in `slowfast`; both references average probabilities for X3D.
    """
    if clip.alpha:
        raise StreamrecError("arch 'x3d' is single-pathway: remove clip.alpha (or set it to null)")
    return X3D(num_classes=num_classes, frames=clip.num_frames, train_crop_size=training_crop(clip, train_crop_size),
               width_factor=width_factor, depth_factor=depth_factor, stem_width=stem_width,
               bottleneck_factor=bottleneck_factor, head_width=head_width, se_ratio=se_ratio,
               stem_temporal_kernel=stem_temporal_kernel, stride_shortcut_bn=stride_shortcut_bn, dropout=dropout,
               head_average=head_average)
