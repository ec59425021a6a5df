"""3D ResNet building blocks shared by SlowFast, Slow-only, I3D and X3D, and the single-pathway
ResNet (Slow-only, I3D, arch ``resnet3d``).

Module and parameter names follow PySlowFast's (``s1.pathway0_stem.conv``,
``s2.pathway1_res0.branch2.a_bn``, ``s1_fuse.conv_f2s``, ``head.projection``) so a PySlowFast
state dict loads with no renaming; the Caffe2 and PyTorchVideo names of these blocks are
tabled here (`RESNET_CAFFE2_RULES`, `RESNET_PYTORCHVIDEO_NAMES`) for every arch built on them.
Every block takes and returns a list of pathway tensors ``[B, C, T, H, W]``: one entry for
single-pathway networks, ``[slow, fast]`` for SlowFast.

Nothing in a forward pass branches on data, and every pooling size is fixed at build time, so
the networks export to ONNX as they are.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import VideoNetwork, register_model
from streamrec.models.checkpoint_keys import (
    CAFFE2_BN,
    PyTorchVideoNames,
    caffe2_keys,
    caffe2_rule,
    pytorchvideo_keys,
)

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}  # bottleneck blocks in res2..res5
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def stage_depths(depth: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Blocks per stage: a standard depth (50, 101) or four explicit counts."""
    if isinstance(depth, int):
        if depth not in STAGE_DEPTHS:
            raise StreamrecError(
                f"model.depth {depth} is not a standard ResNet depth; use 50, 101 or four block counts like [1, 1, 1, 1]"
            )
        return STAGE_DEPTHS[depth]
    blocks = tuple(depth)
    if len(blocks) != 4 or not all(isinstance(b, int) and b >= 1 for b in blocks):
        raise StreamrecError(f"model.depth {list(depth)} must be four block counts >= 1, one per stage res2..res5")
    return blocks  # type: ignore[return-value]


def block_temporal_kernels(pattern: Sequence[int], num_blocks: int, temporal_blocks: int | None = None) -> list[int]:
    """Temporal kernel of each block in a stage, as PySlowFast expands it.

    ``pattern`` repeats over the blocks (I3D's ``[3, 1]`` alternates); only the first
    ``temporal_blocks`` blocks keep it, the rest get 1 (PySlowFast's NUM_BLOCK_TEMP_KERNEL).
    """
    temporal_blocks = num_blocks if temporal_blocks is None else min(temporal_blocks, num_blocks)
    repeated = [pattern[i % len(pattern)] for i in range(num_blocks)]
    return repeated[:temporal_blocks] + [1] * (num_blocks - temporal_blocks)


def batch_norm(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Stem(nn.Module):
    """TxKxK convolution (K = 7 in the references) with spatial stride 2, then a 1x3x3 max-pool with stride 2."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, spatial_kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, (temporal_kernel, spatial_kernel, spatial_kernel), stride=(1, 2, 2),
            padding=(temporal_kernel // 2, spatial_kernel // 2, spatial_kernel // 2), bias=False,
        )
        self.bn = batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class PathwayStems(nn.Module):
    """One stem per pathway (``pathway0_stem``, ``pathway1_stem``)."""

    def __init__(self, stems: Sequence[nn.Module]):
        super().__init__()
        for p, stem in enumerate(stems):
            self.add_module(f"pathway{p}_stem", stem)

    def forward(self, pathways: list[torch.Tensor]) -> list[torch.Tensor]:
        return [getattr(self, f"pathway{p}_stem")(x) for p, x in enumerate(pathways)]


class Bottleneck(nn.Module):
    """Tx1x1 -> 1x3x3 (spatial stride here) -> 1x1x1; the residual branch of a `ResBlock`."""

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int, temporal_kernel: int,
                 stride: int, groups: int = 1):
        super().__init__()
        self.a = nn.Conv3d(in_channels, inner_channels, (temporal_kernel, 1, 1),
                           padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.a_bn = batch_norm(inner_channels)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(inner_channels, inner_channels, (1, 3, 3), stride=(1, stride, stride),
                           padding=(0, 1, 1), groups=groups, bias=False)
        self.b_bn = batch_norm(inner_channels)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = nn.Conv3d(inner_channels, out_channels, 1, bias=False)
        self.c_bn = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Module):
    """A residual branch (``branch2``) plus shortcut; the shortcut projects (``branch1``, then
    ``branch1_bn`` unless ``shortcut_bn`` is off) when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, branch2: nn.Module, shortcut_bn: bool = True):
        super().__init__()
        projects = in_channels != out_channels or stride != 1
        self.branch1 = nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False) if projects else None
        self.branch1_bn = batch_norm(out_channels) if projects and shortcut_bn else None
        self.branch2 = branch2
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.branch1 is not None:
            shortcut = self.branch1(x)
        if self.branch1_bn is not None:
            shortcut = self.branch1_bn(shortcut)
        return self.relu(shortcut + self.branch2(x))


def bottleneck_blocks(in_channels: int, inner_channels: int, out_channels: int, temporal_kernels: Sequence[int],
                      stride: int, groups: int = 1) -> list[ResBlock]:
    """One pathway's blocks of a ResNet stage: one per temporal kernel, the first strided."""
    return [
        ResBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1,
                 Bottleneck(in_channels if i == 0 else out_channels, inner_channels, out_channels, kernel,
                            stride if i == 0 else 1, groups))
        for i, kernel in enumerate(temporal_kernels)
    ]


class ResStage(nn.Module):
    """A stage: a chain of blocks per pathway (``pathway{p}_res{i}``)."""

    def __init__(self, pathway_blocks: Sequence[Sequence[nn.Module]]):
        super().__init__()
        self.num_blocks = [len(blocks) for blocks in pathway_blocks]
        for p, blocks in enumerate(pathway_blocks):
            for i, block in enumerate(blocks):
                self.add_module(f"pathway{p}_res{i}", block)

    def forward(self, pathways: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for p, x in enumerate(pathways):
            for i in range(self.num_blocks[p]):
                x = getattr(self, f"pathway{p}_res{i}")(x)
            out.append(x)
        return out


class FuseFastToSlow(nn.Module):
    """SlowFast's lateral connection: a strided temporal conv of Fast, concatenated onto Slow."""

    def __init__(self, fast_channels: int, channel_ratio: int, kernel: int, alpha: int):
        super().__init__()
        self.conv_f2s = nn.Conv3d(fast_channels, fast_channels * channel_ratio, (kernel, 1, 1), stride=(alpha, 1, 1),
                                  padding=(kernel // 2, 0, 0), bias=False)
        self.bn = batch_norm(fast_channels * channel_ratio)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, pathways: list[torch.Tensor]) -> list[torch.Tensor]:
        slow, fast = pathways
        lateral = self.relu(self.bn(self.conv_f2s(fast)))
        return [torch.cat([slow, lateral], dim=1), fast]


HEAD_AVERAGES = ("logits", "softmax")


class Head(nn.Module):
    """Average-pool each pathway, concatenate, dropout, linear projection.

    The pooling kernel is the final feature map at the training crop, with stride 1: at that
    crop it pools to a single position; a larger test crop leaves a small map of positions,
    each classified, then averaged. ``average`` picks how, as the two references disagree:
    ``logits`` averages logits (PyTorchVideo); ``softmax`` averages probabilities (PySlowFast)
    and returns their log, which are logits whose softmax is exactly PySlowFast's output.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, pool_sizes: Sequence[Sequence[int]],
                 dropout: float = 0.5, average: str = "logits"):
        super().__init__()
        for p, size in enumerate(pool_sizes):
            self.add_module(f"pathway{p}_avgpool", nn.AvgPool3d(tuple(size), stride=1))
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(in_channels), num_classes)
        self.average = check_head_average(average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        pooled = [getattr(self, f"pathway{p}_avgpool")(x) for p, x in enumerate(pathways)]
        x = torch.cat(pooled, dim=1).permute(0, 2, 3, 4, 1)  # B, t, h, w, C: classify every position
        return average_positions(self.projection(self.dropout(x)), self.average)


def check_head_average(average: str) -> str:
    if average not in HEAD_AVERAGES:
        raise StreamrecError(f"model.head_average '{average}' is not one of: {', '.join(HEAD_AVERAGES)}")
    return average


def average_positions(logits: torch.Tensor, average: str) -> torch.Tensor:
    """Per-position logits ``[B, t, h, w, K]`` to clip logits ``[B, K]`` (see `Head`)."""
    if average == "logits":
        return logits.mean(dim=(1, 2, 3))
    log_probabilities = logits.log_softmax(dim=-1)
    peak = log_probabilities.amax(dim=(1, 2, 3), keepdim=True)  # log-mean-exp, shifted so it cannot underflow
    return (peak + (log_probabilities - peak).exp().mean(dim=(1, 2, 3), keepdim=True).log()).flatten(1)


def training_crop(clip: ClipConfig, train_crop_size: int | None) -> int:
    """The crop that fixes the head pooling: ``train_crop_size``, else the clip's crop, which may not be smaller."""
    crop = train_crop_size or clip.crop_size
    if crop > clip.crop_size:
        raise StreamrecError(f"clip.crop_size {clip.crop_size} is smaller than model.train_crop_size {crop}; "
                             f"the head pools a {crop} px crop's feature map, so use a crop of at least {crop}")
    return crop


def head_pool_size(frames: int, crop_size: int, spatial_stride: int = 32) -> tuple[int, int, int]:
    """The final feature map of one pathway at the training crop (PySlowFast's head pool size)."""
    return (frames, crop_size // spatial_stride, crop_size // spatial_stride)


# The blocks above in the Caffe2 model zoo's blob names and in PyTorchVideo's module names.
RESNET_CAFFE2_RULES = (
    caffe2_rule(r"conv1_(w)", lambda m, p: f"s1.pathway{p}_stem.conv"),
    caffe2_rule(rf"res_conv1_{CAFFE2_BN}", lambda m, p: f"s1.pathway{p}_stem.bn"),
    caffe2_rule(r"res(\d+)_(\d+)_branch1_(w)", lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch1"),
    caffe2_rule(rf"res(\d+)_(\d+)_branch1_{CAFFE2_BN}", lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch1_bn"),
    caffe2_rule(r"res(\d+)_(\d+)_branch2([abc])_(w)", lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch2.{m[3]}"),
    caffe2_rule(rf"res(\d+)_(\d+)_branch2([abc])_{CAFFE2_BN}",
                lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch2.{m[3]}_bn"),
    caffe2_rule(r"pred_(w|b)", lambda m, p: "head.projection"),
)
RESNET_PYTORCHVIDEO_NAMES = PyTorchVideoNames(
    res_block={
        "branch1_conv": "branch1", "branch1_norm": "branch1_bn",
        "branch2.conv_a": "branch2.a", "branch2.norm_a": "branch2.a_bn",
        "branch2.conv_b": "branch2.b", "branch2.norm_b": "branch2.b_bn",
        "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn",
    },
    outer={"conv": "conv", "norm": "bn", "proj": "projection"},
)


class ResNet3D(VideoNetwork):
    """Single-pathway 3D ResNet: Slow-only and I3D (PySlowFast's ``ResNet`` model, same names).

    Arguments as in the `resnet3d` builder, which holds the defaults.
    """

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, frames: int, train_crop_size: int, depth: int | Sequence[int], width: int,
                 stem_temporal_kernel: int, stem_spatial_kernel: int, temporal_kernels: Sequence[Sequence[int]],
                 temporal_blocks: Sequence[int] | None, res2_temporal_pool: int, groups: int, dropout: float,
                 head_average: str):
        super().__init__()
        depths = stage_depths(depth)
        if len(temporal_kernels) != 4:
            raise StreamrecError("model.temporal_kernels needs 4 kernel lists, one per stage res2..res5, e.g. [[1], [1], [3], [3]]")
        self.s1 = PathwayStems([Stem(3, width, stem_temporal_kernel, stem_spatial_kernel)])
        in_channels = width
        for stage in range(4):
            scale = 2**stage
            kernels = block_temporal_kernels(temporal_kernels[stage], depths[stage],
                                             None if temporal_blocks is None else temporal_blocks[stage])
            blocks = bottleneck_blocks(in_channels, width * groups * scale, width * 4 * scale, kernels,
                                       stride=1 if stage == 0 else 2, groups=groups)
            self.add_module(f"s{stage + 2}", ResStage([blocks]))
            in_channels = width * 4 * scale
        # I3D halves time after res2 with a max-pool; Slow-only keeps every frame.
        self.pathway0_pool = nn.MaxPool3d((res2_temporal_pool, 1, 1), stride=(res2_temporal_pool, 1, 1))
        self.head = Head([in_channels], num_classes,
                         [head_pool_size(frames // res2_temporal_pool, train_crop_size)], dropout, head_average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.s2(self.s1(pathways))
        x = [self.pathway0_pool(x[0])]
        return self.head(self.s5(self.s4(self.s3(x))))


# Slow-only R50 (PySlowFast's "slow" basis); I3D configs override these.
SLOW_TEMPORAL_KERNELS = ((1,), (1,), (3,), (3,))


@register_model("resnet3d", checkpoint_keys={"caffe2": caffe2_keys(RESNET_CAFFE2_RULES),
                                              "pytorchvideo": pytorchvideo_keys(RESNET_PYTORCHVIDEO_NAMES)})
def resnet3d(
    *,
    clip: ClipConfig,
    num_classes: int,
    depth: int | Sequence[int] = 50,
    width: int = 64,
    stem_temporal_kernel: int = 1,
    stem_spatial_kernel: int = 7,
    temporal_kernels: Sequence[Sequence[int]] = SLOW_TEMPORAL_KERNELS,
    temporal_blocks: Sequence[int] | None = None,
    res2_temporal_pool: int = 1,
    groups: int = 1,
    dropout: float = 0.5,
    head_average: str = "logits",
    train_crop_size: int | None = None,
) -> ResNet3D:
    """Single-pathway 3D ResNet for a clip contract: Slow-only (the defaults) or I3D.

    ``temporal_kernels`` holds one pattern per stage, repeated over its blocks (I3D's ``[3, 1]``
    alternates); ``res2_temporal_pool`` is I3D's max-pool over time after res2 (2) or none (1).
    The other arguments are as in `slowfast`.
    """
    if clip.alpha:
        raise StreamrecError("arch 'resnet3d' is single-pathway: remove clip.alpha (or set it to null)")
    return ResNet3D(num_classes=num_classes, frames=clip.num_frames,
                    train_crop_size=training_crop(clip, train_crop_size), depth=depth, width=width,
                    stem_temporal_kernel=stem_temporal_kernel, stem_spatial_kernel=stem_spatial_kernel,
                    temporal_kernels=temporal_kernels, temporal_blocks=temporal_blocks,
                    res2_temporal_pool=res2_temporal_pool, groups=groups, dropout=dropout, head_average=head_average)
