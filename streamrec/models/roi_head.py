"""Per-person action classification (AVA): SlowFast and Slow-only with an RoI head, as PySlowFast's
``ResNetRoIHead`` (``DETECTION.ENABLE``) and PyTorchVideo's ``create_slowfast_with_roi_head`` /
``create_resnet_with_roi_head`` (hub ``slowfast_r50_detection``, ``slow_r50_detection``) build them.

A network takes ``(pathways, boxes)``: ``boxes`` float ``[N, 5]``, each row (index of its clip in
the batch, x1, y1, x2, y2) in the pixels of the input frames, usually the people on the clip's
keyframe. Per box, each pathway's final feature map is averaged over time, the box is RoIAligned
on it at the map's scale (`roi_align`), max-pooled over space, and the pathways' vectors are
concatenated, dropped out and projected: logits ``[N, num_classes]``, before the activation the
model was trained with (``head_activation``; AVA's classes are independent: sigmoid). Without
boxes, every clip is one box covering its whole frame: logits ``[B, num_classes]``.

The trunks are the Kinetics networks (`SlowFast`, `ResNet3D`, same tensor names) but for res5,
which keeps the map at 1/16 of the frame for RoIAlign to read: spatial stride 1, its 3x3
convolutions dilated by 2 (PySlowFast's RESNET.SPATIAL_STRIDES / SPATIAL_DILATIONS, PyTorchVideo's
``stage_spatial_strides`` / ``stage_conv_b_dilations``). The two references differ in one place:
PyTorchVideo's detection heads build torchvision's ``RoIAlign`` without ``aligned`` (False), while
PySlowFast passes DETECTION.ALIGNED (True by default; False in its Caffe2 AVA zoo configs), so the
configs name ``aligned``.

Checkpoints: PySlowFast's ``.pyth`` share these names (``head.projection``); its Caffe2 AVA zoo
``.pkl`` (``SLOWFAST_32x2_R101_50_50``) adds Slow-pathway non-local blocks to the usual blobs; a
PyTorchVideo detection model (``DetectionBBoxNetwork``) keeps its trunk under ``model.`` and its
projection as ``detection_head.proj``.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import KeyMap, register_model
from streamrec.models.checkpoint_keys import PyTorchVideoNames, caffe2_keys, pytorchvideo_keys
from streamrec.models.resnet3d import (
    NONLOCAL_INSTANTIATIONS,
    RESNET3D_CAFFE2_RULES,
    RESNET_PYTORCHVIDEO_NAMES,
    SLOW_TEMPORAL_KERNELS,
    NonLocal,
    ResBlock,
    ResNet3D,
    ResStage,
    check_nonlocal_blocks,
    four,
)
from streamrec.models.roi_align import roi_align
from streamrec.models.slowfast import (
    SLOWFAST_CAFFE2_RULES,
    SLOWFAST_PYTORCHVIDEO_NAMES,
    SLOWFAST_TEMPORAL_KERNELS,
    SlowFast,
    check_fast_width,
    slowfast_alpha,
)

HEAD_ACTIVATIONS = ("sigmoid", "softmax")
STEM_AND_RES234_STRIDE = 16  # the stem (4) and res3, res4 (2 each): the map's scale before res5


class RoIHead(nn.Module):
    """PySlowFast's ``ResNetRoIHead`` over pathways of one spatial size (see the module docstring)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, resolution: int, spatial_scale: float,
                 aligned: bool, dropout: float):
        super().__init__()
        self.resolution = resolution
        self.spatial_scale = spatial_scale
        self.aligned = aligned
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(sum(in_channels), num_classes)

    def forward(self, pathways: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        # Time-averaged maps, concatenated: RoIAlign and the max-pool work per channel, so this is
        # each pathway pooled on its own (PySlowFast), or PyTorchVideo's concatenation first.
        maps = torch.cat([x.mean(dim=2) for x in pathways], dim=1)  # B, C, H, W
        regions = roi_align(maps, boxes[:, 1:], boxes[:, 0].long(), output_size=self.resolution,
                            spatial_scale=self.spatial_scale, aligned=self.aligned)
        return self.projection(self.dropout(regions.amax(dim=(2, 3))))


def whole_frames(frames: torch.Tensor) -> torch.Tensor:
    """One box per clip covering its whole frame, for pathway input ``[B, 3, T, H, W]``."""
    batch, height, width = frames.shape[0], frames.shape[-2], frames.shape[-1]
    boxes = frames.new_zeros((batch, 5))
    boxes[:, 0] = torch.arange(batch, dtype=frames.dtype, device=frames.device)
    boxes[:, 3], boxes[:, 4] = width, height
    return boxes


def atrous_res5(stage: ResStage, *, stride: int, dilation: int) -> None:
    """res5 as the AVA models build it: its first blocks stride ``stride`` in space (1 keeps the
    map's scale) and every 1x3x3 convolution is dilated by ``dilation``, padded to keep its size."""
    if stride not in (1, 2) or dilation < 1:
        raise StreamrecError(f"model.res5_spatial_stride must be 1 or 2 and model.res5_dilation >= 1; got {stride} "
                             f"and {dilation} (the AVA models: 1 and 2)")
    for name, block in stage.named_children():
        if not isinstance(block, ResBlock):
            continue  # a non-local block
        middle = block.branch2.b
        middle.dilation, middle.padding = (1, dilation, dilation), (0, dilation, dilation)
        if name.endswith("_res0"):
            middle.stride = (1, stride, stride)
            block.branch1.stride = (1, stride, stride)


def add_nonlocal_blocks(network: nn.Module, channels: Sequence[int], blocks: Sequence[Sequence[int]],
                        pool: Sequence[int], instantiation: str) -> None:
    """Non-local blocks after the listed blocks of each stage's first pathway (``pathway0_nonlocal{i}``,
    as the Caffe2 AVA SlowFast R101 has them in res4)."""
    if instantiation not in NONLOCAL_INSTANTIATIONS:
        raise StreamrecError(f"model.nonlocal_instantiation '{instantiation}' is not one of: "
                             f"{', '.join(NONLOCAL_INSTANTIATIONS)}")
    for stage, (width, indices) in enumerate(zip(channels, four(blocks, "nonlocal_blocks"))):
        check_nonlocal_blocks(stage, indices, network.get_submodule(f"s{stage + 2}").num_blocks[0])
        for index in indices:
            network.get_submodule(f"s{stage + 2}").add_module(
                f"pathway0_nonlocal{index}", NonLocal(width, width // 2, pool, instantiation))


def check_head_activation(activation: str) -> str:
    if activation not in HEAD_ACTIVATIONS:
        raise StreamrecError(f"model.head_activation '{activation}' is not one of: {', '.join(HEAD_ACTIVATIONS)}")
    return activation


class SlowFastRoI(SlowFast):
    """SlowFast with an RoI head; arguments as in the `slowfast_roi` builder, which holds the defaults."""

    takes_boxes = True

    def __init__(self, *, num_classes: int, alpha: int, depth: int | Sequence[int], width: int, beta_inv: int,
                 fusion_channel_ratio: int, fusion_kernel: int, stem_temporal_kernels: Sequence[int],
                 stem_spatial_kernel: int, temporal_kernels: Sequence[Sequence[Sequence[int]]],
                 temporal_blocks: Sequence[Sequence[int]] | None, groups: int, nonlocal_blocks: Sequence[Sequence[int]],
                 nonlocal_pool: Sequence[int], nonlocal_instantiation: str, res5_spatial_stride: int,
                 res5_dilation: int, roi_resolution: int, aligned: bool, dropout: float, head_activation: str):
        # The Kinetics trunk (its pooling head is replaced below, so its sizes do not matter) ...
        super().__init__(num_classes=num_classes, alpha=alpha, slow_frames=1, train_crop_size=32, depth=depth,
                         width=width, beta_inv=beta_inv, fusion_channel_ratio=fusion_channel_ratio,
                         fusion_kernel=fusion_kernel, stem_temporal_kernels=stem_temporal_kernels,
                         stem_spatial_kernel=stem_spatial_kernel, temporal_kernels=temporal_kernels,
                         temporal_blocks=temporal_blocks, groups=groups, dropout=dropout, head_average="logits")
        # ... with the AVA models' res5 and non-local blocks, and the RoI head.
        widths = [width * 4 * 2**stage for stage in range(4)]
        add_nonlocal_blocks(self, widths, nonlocal_blocks, nonlocal_pool, nonlocal_instantiation)
        atrous_res5(self.s5, stride=res5_spatial_stride, dilation=res5_dilation)
        self.head_activation = check_head_activation(head_activation)
        self.head = RoIHead([widths[-1], widths[-1] // beta_inv], num_classes, resolution=roi_resolution,
                            spatial_scale=1.0 / (STEM_AND_RES234_STRIDE * res5_spatial_stride), aligned=aligned,
                            dropout=dropout)

    def forward(self, pathways: list[torch.Tensor], boxes: torch.Tensor | None = None) -> torch.Tensor:
        x = self.s1_fuse(self.s1(pathways))
        x = self.s2_fuse(self.s2(x))
        x = self.s3_fuse(self.s3(x))
        x = self.s4_fuse(self.s4(x))
        return self.head(self.s5(x), whole_frames(pathways[0]) if boxes is None else boxes)


class ResNet3DRoI(ResNet3D):
    """A single-pathway ResNet (Slow-only, C2D, I3D) with an RoI head; arguments as in the
    `resnet3d_roi` builder, which holds the defaults."""

    takes_boxes = True

    def __init__(self, *, num_classes: int, depth: int | Sequence[int], width: int, stem_temporal_kernel: int,
                 stem_spatial_kernel: int, temporal_kernels: Sequence[Sequence[int]],
                 temporal_blocks: Sequence[int] | None, res2_temporal_pool: int, groups: int,
                 nonlocal_blocks: Sequence[Sequence[int]], nonlocal_pool: Sequence[int], nonlocal_instantiation: str,
                 res5_spatial_stride: int, res5_dilation: int, roi_resolution: int, aligned: bool, dropout: float,
                 head_activation: str):
        super().__init__(num_classes=num_classes, frames=res2_temporal_pool, train_crop_size=32, depth=depth,
                         width=width, stem_temporal_kernel=stem_temporal_kernel,
                         stem_spatial_kernel=stem_spatial_kernel, stem_pool=True, temporal_kernels=temporal_kernels, temporal_blocks=temporal_blocks,
                         res2_temporal_pool=res2_temporal_pool, spatial_strides=(1, 2, 2, 2),
                         temporal_strides=(1, 1, 1, 1), b_temporal_kernel=1, factorized_b=False, groups=groups,
                         depthwise=False, nonlocal_blocks=nonlocal_blocks, nonlocal_pool=nonlocal_pool,
                         nonlocal_instantiation=nonlocal_instantiation, dropout=dropout, head_average="logits")
        atrous_res5(self.s5, stride=res5_spatial_stride, dilation=res5_dilation)
        self.head_activation = check_head_activation(head_activation)
        self.head = RoIHead([width * 32], num_classes, resolution=roi_resolution,
                            spatial_scale=1.0 / (STEM_AND_RES234_STRIDE * res5_spatial_stride), aligned=aligned,
                            dropout=dropout)

    def forward(self, pathways: list[torch.Tensor], boxes: torch.Tensor | None = None) -> torch.Tensor:
        x = self.s2(self.s1(pathways))
        x = [self.pathway0_pool(x[0])]
        return self.head(self.s5(self.s4(self.s3(x))), whole_frames(pathways[0]) if boxes is None else boxes)


# --------------------------------------------------------------------------- checkpoint layouts

PYTORCHVIDEO_DETECTION_HEAD = re.compile(r"detection_head\.proj\.(weight|bias)")


def pytorchvideo_detection_keys(names: PyTorchVideoNames) -> KeyMap:
    """PyTorchVideo's ``DetectionBBoxNetwork``: the trunk's keys under ``model.``, named as the
    classification network's (``names``), and the projection ``detection_head.proj``."""
    trunk = pytorchvideo_keys(names)

    def rename(keys: Sequence[str]) -> dict[str, str | None]:
        inner = {key: key[len("model."):] for key in keys if key.startswith("model.")}
        trunk_names = trunk(list(inner.values()))
        named: dict[str, str | None] = {}
        for key in keys:
            if key in inner:
                named[key] = trunk_names[inner[key]]
            elif m := PYTORCHVIDEO_DETECTION_HEAD.fullmatch(key):
                named[key] = f"head.projection.{m[1]}"
            else:
                named[key] = None
        return named

    return rename


# An RoI head classifies one region: there are no positions to average, whatever the checkpoint's origin.
NO_HEAD_AVERAGE = {"pyslowfast": None, "caffe2": None, "pytorchvideo": None}


# --------------------------------------------------------------------------- builders


@register_model("slowfast_roi", head_average_by_origin=NO_HEAD_AVERAGE,  # type: ignore[arg-type]
                checkpoint_keys={"caffe2": caffe2_keys(SLOWFAST_CAFFE2_RULES + RESNET3D_CAFFE2_RULES),
                                 "pytorchvideo": pytorchvideo_detection_keys(SLOWFAST_PYTORCHVIDEO_NAMES)})
def slowfast_roi(
    *,
    clip: ClipConfig,
    num_classes: int,
    depth: int | Sequence[int] = 50,
    width: int = 64,
    beta_inv: int = 8,
    fusion_channel_ratio: int = 2,
    fusion_kernel: int = 7,
    stem_temporal_kernels: Sequence[int] = (1, 5),
    stem_spatial_kernel: int = 7,
    temporal_kernels: Sequence[Sequence[Sequence[int]]] = SLOWFAST_TEMPORAL_KERNELS,
    temporal_blocks: Sequence[Sequence[int]] | None = None,
    groups: int = 1,
    nonlocal_blocks: Sequence[Sequence[int]] = ((), (), (), ()),
    nonlocal_pool: Sequence[int] = (1, 2, 2),
    nonlocal_instantiation: str = "dot_product",
    res5_spatial_stride: int = 1,
    res5_dilation: int = 2,
    roi_resolution: int = 7,
    aligned: bool = True,
    dropout: float = 0.5,
    head_activation: str = "sigmoid",
) -> SlowFastRoI:
    """SlowFast with an RoI head for a clip contract (alpha from ``clip.alpha``); the defaults are
    PySlowFast's AVA SlowFast R50 (``SLOWFAST_32x2_R50_SHORT``).

    - trunk arguments as in `slowfast`; ``nonlocal_blocks``: per stage, the Slow pathway's blocks
      followed by a non-local block (pooled by ``nonlocal_pool``, normalised by ``nonlocal_instantiation``);
    - ``res5_spatial_stride``, ``res5_dilation``: res5's stride and its 3x3 dilation (AVA: 1 and 2;
      the Kinetics trunk: 2 and 1); RoIAlign reads the map at its scale, 1/16 or 1/32;
    - ``roi_resolution``: RoIAlign's output size per side, max-pooled afterwards; ``aligned``: see the
      module docstring; ``head_activation``: how the logits are read, ``sigmoid`` or ``softmax``.
    """
    check_fast_width(width, beta_inv, groups)
    return SlowFastRoI(num_classes=num_classes, alpha=slowfast_alpha(clip, "slowfast_roi"), depth=depth, width=width,
                       beta_inv=beta_inv, fusion_channel_ratio=fusion_channel_ratio, fusion_kernel=fusion_kernel,
                       stem_temporal_kernels=stem_temporal_kernels, stem_spatial_kernel=stem_spatial_kernel,
                       temporal_kernels=temporal_kernels, temporal_blocks=temporal_blocks, groups=groups,
                       nonlocal_blocks=nonlocal_blocks, nonlocal_pool=nonlocal_pool,
                       nonlocal_instantiation=nonlocal_instantiation, res5_spatial_stride=res5_spatial_stride,
                       res5_dilation=res5_dilation, roi_resolution=roi_resolution, aligned=aligned, dropout=dropout,
                       head_activation=head_activation)


@register_model("resnet3d_roi", head_average_by_origin=NO_HEAD_AVERAGE,  # type: ignore[arg-type]
                checkpoint_keys={"caffe2": caffe2_keys(RESNET3D_CAFFE2_RULES),
                                 "pytorchvideo": pytorchvideo_detection_keys(RESNET_PYTORCHVIDEO_NAMES)})
def resnet3d_roi(
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
    nonlocal_blocks: Sequence[Sequence[int]] = ((), (), (), ()),
    nonlocal_pool: Sequence[int] = (1, 2, 2),
    nonlocal_instantiation: str = "softmax",
    res5_spatial_stride: int = 1,
    res5_dilation: int = 2,
    roi_resolution: int = 7,
    aligned: bool = True,
    dropout: float = 0.5,
    head_activation: str = "sigmoid",
) -> ResNet3DRoI:
    """A single-pathway ResNet with an RoI head; the defaults are Slow-only R50 (PySlowFast's AVA
    ``SLOW_8x8_R50``, a 4x16 clip; PyTorchVideo's ``slow_r50_detection``). Trunk arguments as in
    `resnet3d`, head and res5 arguments as in `slowfast_roi`."""
    if clip.alpha:
        raise StreamrecError("arch 'resnet3d_roi' is single-pathway: remove clip.alpha (or set it to null)")
    return ResNet3DRoI(num_classes=num_classes, depth=depth, width=width, stem_temporal_kernel=stem_temporal_kernel,
                       stem_spatial_kernel=stem_spatial_kernel, temporal_kernels=temporal_kernels,
                       temporal_blocks=temporal_blocks, res2_temporal_pool=res2_temporal_pool, groups=groups,
                       nonlocal_blocks=nonlocal_blocks, nonlocal_pool=nonlocal_pool,
                       nonlocal_instantiation=nonlocal_instantiation, res5_spatial_stride=res5_spatial_stride,
                       res5_dilation=res5_dilation, roi_resolution=roi_resolution, aligned=aligned, dropout=dropout,
                       head_activation=head_activation)
