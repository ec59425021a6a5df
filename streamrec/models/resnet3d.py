"""3D ResNet building blocks shared by SlowFast, X3D and R(2+1)D, and the single-pathway bottleneck
ResNet (arch ``resnet3d``): Slow-only, I3D, C2D, non-local I3D, CSN and R(2+1)D-50 are all this
network with other temporal kernels, strides and middle convolutions.

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

import math
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

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}  # bottleneck blocks in res2..res5
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def stage_depths(depth: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Blocks per stage: a standard depth (50, 101) or four explicit counts."""
    if isinstance(depth, int):
        if depth not in STAGE_DEPTHS:
            raise StreamrecError(
                f"model.depth {depth} is not a standard ResNet depth; use 50, 101, 152 or four block counts like [1, 1, 1, 1]"
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
    """TxKxK convolution (K = 7 in the references) with spatial stride 2, then (unless ``pool`` is off,
    as in R(2+1)D) a 1x3x3 max-pool with stride 2."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, spatial_kernel: int = 7,
                 pool: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, (temporal_kernel, spatial_kernel, spatial_kernel), stride=(1, 2, 2),
            padding=(temporal_kernel // 2, spatial_kernel // 2, spatial_kernel // 2), bias=False,
        )
        self.bn = batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        return x if self.pool_layer is None else self.pool_layer(x)


class PathwayStems(nn.Module):
    """One stem per pathway (``pathway0_stem``, ``pathway1_stem``)."""

    def __init__(self, stems: Sequence[nn.Module]):
        super().__init__()
        for p, stem in enumerate(stems):
            self.add_module(f"pathway{p}_stem", stem)

    def forward(self, pathways: list[torch.Tensor]) -> list[torch.Tensor]:
        return [getattr(self, f"pathway{p}_stem")(x) for p, x in enumerate(pathways)]


class Conv2Plus1D(nn.Module):
    """A TxKxK convolution factorised into a 1xKxK spatial and a Tx1x1 temporal one, with a batch
    norm and ReLU between them (R(2+1)D). torchvision convolves space first, PyTorchVideo time first."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, *, temporal_kernel: int,
                 spatial_kernel: int, temporal_stride: int, spatial_stride: int, spatial_first: bool):
        super().__init__()
        self.spatial_first = spatial_first
        xy_in, xy_out = (in_channels, mid_channels) if spatial_first else (mid_channels, out_channels)
        t_in, t_out = (mid_channels, out_channels) if spatial_first else (in_channels, mid_channels)
        self.conv_t = nn.Conv3d(t_in, t_out, (temporal_kernel, 1, 1), stride=(temporal_stride, 1, 1),
                                padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.bn = batch_norm(mid_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv_xy = nn.Conv3d(xy_in, xy_out, (1, spatial_kernel, spatial_kernel),
                                 stride=(1, spatial_stride, spatial_stride),
                                 padding=(0, spatial_kernel // 2, spatial_kernel // 2), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = (self.conv_xy, self.conv_t) if self.spatial_first else (self.conv_t, self.conv_xy)
        return second(self.relu(self.bn(first(x))))


class Bottleneck(nn.Module):
    """Tx1x1 -> 1x3x3 (strides here) -> 1x1x1; the residual branch of a `ResBlock`.

    The middle convolution may span time (``b_temporal_kernel`` 3: CSN's 3x3x3, depthwise when
    ``groups`` is its width), factorised into time then space (``factorized``: R(2+1)D), and
    stride in time (``temporal_stride``).
    """

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int, temporal_kernel: int,
                 stride: int, groups: int = 1, *, temporal_stride: int = 1, b_temporal_kernel: int = 1,
                 factorized: bool = False):
        super().__init__()
        self.a = nn.Conv3d(in_channels, inner_channels, (temporal_kernel, 1, 1),
                           padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.a_bn = batch_norm(inner_channels)
        self.a_relu = nn.ReLU(inplace=True)
        if factorized:
            if groups != 1:
                raise StreamrecError("model.factorized_b (R(2+1)D) takes no groups; "
                                     "remove model.groups or model.depthwise")
            self.b = Conv2Plus1D(inner_channels, inner_channels, inner_channels, temporal_kernel=b_temporal_kernel,
                                 spatial_kernel=3, temporal_stride=temporal_stride, spatial_stride=stride,
                                 spatial_first=False)
        else:
            self.b = nn.Conv3d(inner_channels, inner_channels, (b_temporal_kernel, 3, 3),
                               stride=(temporal_stride, stride, stride), padding=(b_temporal_kernel // 2, 1, 1),
                               groups=groups, bias=False)
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
    ``branch1_bn`` unless ``shortcut_bn`` is off) when the shape changes. ``stride`` is spatial;
    ``temporal_stride`` must match the branch's."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, branch2: nn.Module, shortcut_bn: bool = True,
                 temporal_stride: int = 1):
        super().__init__()
        projects = in_channels != out_channels or stride != 1 or temporal_stride != 1
        self.branch1 = nn.Conv3d(in_channels, out_channels, 1, stride=(temporal_stride, stride, stride),
                                 bias=False) if projects else None
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
                      stride: int, groups: int = 1, *, temporal_stride: int = 1, b_temporal_kernel: int = 1,
                      factorized: bool = False) -> list[ResBlock]:
    """One pathway's blocks of a ResNet stage: one per temporal kernel, the first strided (see `Bottleneck`)."""
    blocks = []
    for i, kernel in enumerate(temporal_kernels):
        first = i == 0
        block_in, spatial, temporal = (in_channels, stride, temporal_stride) if first else (out_channels, 1, 1)
        branch2 = Bottleneck(block_in, inner_channels, out_channels, kernel, spatial, groups, temporal_stride=temporal,
                             b_temporal_kernel=b_temporal_kernel, factorized=factorized)
        blocks.append(ResBlock(block_in, out_channels, spatial, branch2, temporal_stride=temporal))
    return blocks


NONLOCAL_INSTANTIATIONS = ("softmax", "dot_product")


class NonLocal(nn.Module):
    """A non-local block (Wang et al., 2018; PySlowFast's ``Nonlocal``): every position attends to
    every position of a max-pooled copy, through 1x1x1 embeddings; the result, projected back and
    batch-normalised, is added to the input.

    ``softmax`` normalises the affinities with a scaled softmax, ``dot_product`` divides them by
    the number of positions attended to.
    """

    def __init__(self, channels: int, inner_channels: int, pool_size: Sequence[int], instantiation: str):
        super().__init__()
        if instantiation not in NONLOCAL_INSTANTIATIONS:
            raise StreamrecError(f"model.nonlocal_instantiation '{instantiation}' is not one of: "
                                 f"{', '.join(NONLOCAL_INSTANTIATIONS)}")
        self.instantiation = instantiation
        self.scale = inner_channels ** -0.5
        self.conv_theta = nn.Conv3d(channels, inner_channels, 1)
        self.conv_phi = nn.Conv3d(channels, inner_channels, 1)
        self.conv_g = nn.Conv3d(channels, inner_channels, 1)
        self.conv_out = nn.Conv3d(inner_channels, channels, 1)
        self.bn = batch_norm(channels)
        pool_size = tuple(pool_size)
        self.pool = nn.MaxPool3d(pool_size, stride=pool_size) if any(k > 1 for k in pool_size) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.conv_theta(x)
        pooled = x if self.pool is None else self.pool(x)
        phi, g = self.conv_phi(pooled).flatten(2), self.conv_g(pooled).flatten(2)  # B, C', P
        affinity = torch.matmul(theta.flatten(2).transpose(1, 2), phi)  # B, THW, P
        if self.instantiation == "softmax":
            affinity = (affinity * self.scale).softmax(dim=-1)
        else:
            affinity = affinity / phi.shape[-1]
        attended = torch.matmul(g, affinity.transpose(1, 2)).reshape(theta.shape)  # B, C', T, H, W
        return x + self.bn(self.conv_out(attended))


class ResStage(nn.Module):
    """A stage: a chain of blocks per pathway (``pathway{p}_res{i}``), each optionally followed by a
    non-local block (``pathway{p}_nonlocal{i}``)."""

    def __init__(self, pathway_blocks: Sequence[Sequence[nn.Module]],
                 nonlocal_blocks: Sequence[dict[int, nn.Module]] | None = None):
        super().__init__()
        self.num_blocks = [len(blocks) for blocks in pathway_blocks]
        for p, blocks in enumerate(pathway_blocks):
            for i, block in enumerate(blocks):
                self.add_module(f"pathway{p}_res{i}", block)
        for p, modules in enumerate(nonlocal_blocks or []):
            for i, module in modules.items():
                self.add_module(f"pathway{p}_nonlocal{i}", module)

    def forward(self, pathways: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for p, x in enumerate(pathways):
            for i in range(self.num_blocks[p]):
                x = getattr(self, f"pathway{p}_res{i}")(x)
                nonlocal_block = getattr(self, f"pathway{p}_nonlocal{i}", None)
                if nonlocal_block is not None:
                    x = nonlocal_block(x)
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
    if crop_size < spatial_stride:
        raise StreamrecError(f"a {crop_size} px crop is smaller than the network's spatial stride {spatial_stride}: "
                             f"its final feature map would be empty; use clip.crop_size {spatial_stride} or more")
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
# The single-pathway ResNet's non-local blocks, after block i of stage s:
# nonlocal_conv{s}_{i}_{theta,phi,g,out}_{w,b} and nonlocal_conv{s}_{i}_bn_*.
RESNET3D_CAFFE2_RULES = RESNET_CAFFE2_RULES + (
    caffe2_rule(r"nonlocal_conv(\d+)_(\d+)_(theta|phi|g|out)_(w|b)",
                lambda m, p: f"s{m[1]}.pathway0_nonlocal{m[2]}.conv_{m[3]}", pathways=(0,)),
    caffe2_rule(rf"nonlocal_conv(\d+)_(\d+)_{CAFFE2_BN}", lambda m, p: f"s{m[1]}.pathway0_nonlocal{m[2]}.bn",
                pathways=(0,)),
)
RESNET_PYTORCHVIDEO_NAMES = PyTorchVideoNames(
    res_block={
        "branch1_conv": "branch1", "branch1_norm": "branch1_bn",
        "branch2.conv_a": "branch2.a", "branch2.norm_a": "branch2.a_bn",
        "branch2.conv_b": "branch2.b", "branch2.norm_b": "branch2.b_bn",
        "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn",
        # R(2+1)D's factorised middle convolution (`Conv2Plus1D`)
        "branch2.conv_b.conv_t": "branch2.b.conv_t", "branch2.conv_b.norm": "branch2.b.bn",
        "branch2.conv_b.conv_xy": "branch2.b.conv_xy",
    },
    outer={"conv": "conv", "norm": "bn", "proj": "projection"},
)


def four(values: Sequence, name: str) -> tuple:
    """A per-stage setting (res2..res5), or a clear error."""
    values = tuple(values)
    if len(values) != 4:
        raise StreamrecError(f"model.{name} needs 4 values, one per stage res2..res5; got {list(values)}")
    return values


def check_nonlocal_blocks(stage: int, indices: Sequence[int], blocks: int) -> None:
    """A non-local block follows one of its stage's ``blocks``: an index past them would build a
    network without it, silently."""
    outside = sorted(i for i in indices if not 0 <= i < blocks)
    if outside:
        raise StreamrecError(f"model.nonlocal_blocks: res{stage + 2} has {blocks} blocks (0 to {blocks - 1}), got "
                             f"{outside}; list the blocks a non-local block follows, counted from 0")


class ResNet3D(VideoNetwork):
    """Single-pathway bottleneck 3D ResNet (PySlowFast's ``ResNet`` model, same names).

    Arguments as in the `resnet3d` builder, which holds the defaults.
    """

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, frames: int, train_crop_size: int, depth: int | Sequence[int], width: int,
                 stem_temporal_kernel: int, stem_spatial_kernel: int, stem_pool: bool,
                 temporal_kernels: Sequence[Sequence[int]], temporal_blocks: Sequence[int] | None,
                 res2_temporal_pool: int, spatial_strides: Sequence[int], temporal_strides: Sequence[int],
                 b_temporal_kernel: int, factorized_b: bool, groups: int, depthwise: bool,
                 nonlocal_blocks: Sequence[Sequence[int]], nonlocal_pool: Sequence[int], nonlocal_instantiation: str,
                 dropout: float, head_average: str):
        super().__init__()
        depths = stage_depths(depth)
        temporal_kernels = four(temporal_kernels, "temporal_kernels")
        spatial_strides = four(spatial_strides, "spatial_strides")
        temporal_strides = four(temporal_strides, "temporal_strides")
        nonlocal_blocks = four(nonlocal_blocks, "nonlocal_blocks")
        self.s1 = PathwayStems([Stem(3, width, stem_temporal_kernel, stem_spatial_kernel, pool=stem_pool)])
        in_channels = width
        for stage in range(4):
            scale = 2**stage
            inner_channels = width * scale if depthwise else width * groups * scale
            out_channels = width * 4 * scale
            kernels = block_temporal_kernels(temporal_kernels[stage], depths[stage],
                                             None if temporal_blocks is None else temporal_blocks[stage])
            blocks = bottleneck_blocks(in_channels, inner_channels, out_channels, kernels,
                                       stride=spatial_strides[stage], groups=inner_channels if depthwise else groups,
                                       temporal_stride=temporal_strides[stage], b_temporal_kernel=b_temporal_kernel,
                                       factorized=factorized_b)
            check_nonlocal_blocks(stage, nonlocal_blocks[stage], depths[stage])
            nonlocal_modules = {i: NonLocal(out_channels, out_channels // 2, nonlocal_pool, nonlocal_instantiation)
                                for i in nonlocal_blocks[stage]}
            self.add_module(f"s{stage + 2}", ResStage([blocks], [nonlocal_modules]))
            in_channels = out_channels
        # I3D and C2D halve time after res2 with a max-pool; the others keep every frame there.
        self.pathway0_pool = nn.MaxPool3d((res2_temporal_pool, 1, 1), stride=(res2_temporal_pool, 1, 1))
        final_frames = frames // res2_temporal_pool // math.prod(temporal_strides)
        spatial_stride = 2 * (2 if stem_pool else 1) * math.prod(spatial_strides)
        self.head = Head([in_channels], num_classes, [head_pool_size(final_frames, train_crop_size, spatial_stride)],
                         dropout, head_average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.s2(self.s1(pathways))
        x = [self.pathway0_pool(x[0])]
        return self.head(self.s5(self.s4(self.s3(x))))


# Slow-only R50 (PySlowFast's "slow" basis); the other configs override these.
SLOW_TEMPORAL_KERNELS = ((1,), (1,), (3,), (3,))


@register_model("resnet3d", checkpoint_keys={"caffe2": caffe2_keys(RESNET3D_CAFFE2_RULES),
                                              "pytorchvideo": pytorchvideo_keys(RESNET_PYTORCHVIDEO_NAMES)})
def resnet3d(
    *,
    clip: ClipConfig,
    num_classes: int,
    depth: int | Sequence[int] = 50,
    width: int = 64,
    stem_temporal_kernel: int = 1,
    stem_spatial_kernel: int = 7,
    stem_pool: bool = True,
    temporal_kernels: Sequence[Sequence[int]] = SLOW_TEMPORAL_KERNELS,
    temporal_blocks: Sequence[int] | None = None,
    res2_temporal_pool: int = 1,
    spatial_strides: Sequence[int] = (1, 2, 2, 2),
    temporal_strides: Sequence[int] = (1, 1, 1, 1),
    b_temporal_kernel: int = 1,
    factorized_b: bool = False,
    groups: int = 1,
    depthwise: bool = False,
    nonlocal_blocks: Sequence[Sequence[int]] = ((), (), (), ()),
    nonlocal_pool: Sequence[int] = (1, 2, 2),
    nonlocal_instantiation: str = "softmax",
    dropout: float = 0.5,
    head_average: str = "logits",
    train_crop_size: int | None = None,
) -> ResNet3D:
    """Single-pathway bottleneck 3D ResNet for a clip contract: Slow-only (the defaults), I3D, C2D,
    non-local I3D, CSN or R(2+1)D-50, as their configs set it.

    - ``temporal_kernels``: one pattern per stage for the first (Tx1x1) conv of each block, repeated
      over its blocks (I3D's ``[3, 1]`` alternates); ``temporal_blocks`` as in `slowfast`;
    - ``stem_pool``: the stem's 1x3x3 max-pool (R(2+1)D has none); ``res2_temporal_pool``: the
      max-pool over time after res2 (2 in I3D and C2D, else 1);
    - ``spatial_strides``, ``temporal_strides``: each stage's first block strides (PySlowFast:
      space 1, 2, 2, 2 and no time; CSN and R(2+1)D stride time too);
    - ``b_temporal_kernel``: the middle conv's temporal kernel (1: 1x3x3; CSN and R(2+1)D: 3);
      ``factorized_b``: split it into Tx1x1 then 1x3x3 (R(2+1)D); ``groups``: ResNeXt groups;
      ``depthwise``: the middle conv is depthwise (CSN);
    - ``nonlocal_blocks``: per stage, the blocks followed by a non-local block (PySlowFast's
      NONLOCAL.LOCATION), which max-pools by ``nonlocal_pool`` and normalises by
      ``nonlocal_instantiation`` (``softmax`` or ``dot_product``);
    - ``dropout``, ``head_average``, ``train_crop_size``: as in `slowfast`.
    """
    if clip.alpha:
        raise StreamrecError("arch 'resnet3d' is single-pathway: remove clip.alpha (or set it to null)")
    return ResNet3D(num_classes=num_classes, frames=clip.num_frames,
                    train_crop_size=training_crop(clip, train_crop_size), depth=depth, width=width,
                    stem_temporal_kernel=stem_temporal_kernel, stem_spatial_kernel=stem_spatial_kernel,
                    stem_pool=stem_pool, temporal_kernels=temporal_kernels, temporal_blocks=temporal_blocks,
                    res2_temporal_pool=res2_temporal_pool, spatial_strides=spatial_strides,
                    temporal_strides=temporal_strides, b_temporal_kernel=b_temporal_kernel, factorized_b=factorized_b,
                    groups=groups, depthwise=depthwise, nonlocal_blocks=nonlocal_blocks, nonlocal_pool=nonlocal_pool,
                    nonlocal_instantiation=nonlocal_instantiation, dropout=dropout, head_average=head_average)
