"""SlowFast (Feichtenhofer et al., 2019): a Slow pathway at low frame rate and full width, a Fast
pathway at ``alpha`` times the frame rate and ``1 / beta_inv`` the width, fused Fast-to-Slow
after the stem and after res2..res4.

Defaults are the Kinetics R50 model of PySlowFast and PyTorchVideo; the configs in
``configs/slowfast_*.yaml`` name every value that differs.
"""

from __future__ import annotations

from typing import Sequence

import torch

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import VideoNetwork, register_model
from streamrec.models.checkpoint_keys import CAFFE2_BN, PyTorchVideoNames, caffe2_keys, caffe2_rule, pytorchvideo_keys
from streamrec.models.resnet3d import (
    RESNET_CAFFE2_RULES,
    RESNET_PYTORCHVIDEO_NAMES,
    FuseFastToSlow,
    Head,
    PathwayStems,
    ResStage,
    Stem,
    block_temporal_kernels,
    bottleneck_blocks,
    head_pool_size,
    stage_depths,
    training_crop,
)

# Temporal kernel pattern of res2..res5, per pathway [slow, fast] (PySlowFast's "slowfast" basis).
SLOWFAST_TEMPORAL_KERNELS = (((1,), (3,)), ((1,), (3,)), ((3,), (3,)), ((3,), (3,)))


# The Fast->Slow laterals in the Caffe2 model zoo: they hang off the Fast pathway's pool1 or the
# last block of a stage. PyTorchVideo names them in a stage's multipathway_fusion.
SLOWFAST_CAFFE2_RULES = RESNET_CAFFE2_RULES + (
    caffe2_rule(r"pool1_subsample_(w)", lambda m, p: "s1_fuse.conv_f2s", pathways=(1,)),
    caffe2_rule(rf"pool1_subsample_{CAFFE2_BN}", lambda m, p: "s1_fuse.bn", pathways=(1,)),
    caffe2_rule(r"res(\d+)_\d+_branch2c_bn_subsample_(w)", lambda m, p: f"s{m[1]}_fuse.conv_f2s", pathways=(1,)),
    caffe2_rule(rf"res(\d+)_\d+_branch2c_bn_subsample_{CAFFE2_BN}", lambda m, p: f"s{m[1]}_fuse.bn", pathways=(1,)),
)
SLOWFAST_PYTORCHVIDEO_NAMES = PyTorchVideoNames(RESNET_PYTORCHVIDEO_NAMES.res_block, RESNET_PYTORCHVIDEO_NAMES.outer,
                                                fusion={"conv_fast_to_slow": "conv_f2s", "norm": "bn"})


class SlowFast(VideoNetwork):
    """Arguments as in the `slowfast` builder, which holds the defaults."""

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, alpha: int, slow_frames: int, train_crop_size: int,
                 depth: int | Sequence[int], width: int, beta_inv: int, fusion_channel_ratio: int, fusion_kernel: int,
                 stem_temporal_kernels: Sequence[int], stem_spatial_kernel: int,
                 temporal_kernels: Sequence[Sequence[Sequence[int]]], temporal_blocks: Sequence[Sequence[int]] | None,
                 groups: int, dropout: float, head_average: str):
        super().__init__()
        depths = stage_depths(depth)
        if len(temporal_kernels) != 4 or any(len(stage) != 2 for stage in temporal_kernels):
            raise StreamrecError("model.temporal_kernels needs 4 stages x [slow, fast] kernel lists, e.g. [[[1], [3]], ...]")
        fast_width = width // beta_inv

        self.s1 = PathwayStems([Stem(3, width, stem_temporal_kernels[0], stem_spatial_kernel),
                                Stem(3, fast_width, stem_temporal_kernels[1], stem_spatial_kernel)])
        self.s1_fuse = FuseFastToSlow(fast_width, fusion_channel_ratio, fusion_kernel, alpha)
        in_channels = [width + fast_width * fusion_channel_ratio, fast_width]
        for stage in range(4):  # res2..res5 are s2..s5
            scale = 2**stage
            out_channels = [width * 4 * scale, width * 4 * scale // beta_inv]
            inner_channels = [width * groups * scale, width * groups * scale // beta_inv]
            kernels = [
                block_temporal_kernels(temporal_kernels[stage][p], depths[stage],
                                       None if temporal_blocks is None else temporal_blocks[stage][p])
                for p in range(2)
            ]
            self.add_module(f"s{stage + 2}", ResStage([
                bottleneck_blocks(in_channels[p], inner_channels[p], out_channels[p], kernels[p],
                                  stride=1 if stage == 0 else 2, groups=groups)
                for p in range(2)
            ]))
            if stage < 3:
                self.add_module(f"s{stage + 2}_fuse",
                                FuseFastToSlow(out_channels[1], fusion_channel_ratio, fusion_kernel, alpha))
                in_channels = [out_channels[0] + out_channels[1] * fusion_channel_ratio, out_channels[1]]
        self.head = Head(
            out_channels, num_classes,
            [head_pool_size(slow_frames, train_crop_size), head_pool_size(slow_frames * alpha, train_crop_size)],
            dropout, head_average,
        )

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.s1_fuse(self.s1(pathways))
        x = self.s2_fuse(self.s2(x))
        x = self.s3_fuse(self.s3(x))
        x = self.s4_fuse(self.s4(x))
        return self.head(self.s5(x))


def slowfast_alpha(clip: ClipConfig, arch: str) -> int:
    """The clip's Fast/Slow frame-rate ratio, which every SlowFast builder needs."""
    if not clip.alpha:
        raise StreamrecError(f"arch '{arch}' needs clip.alpha (the Fast/Slow frame-rate ratio), e.g. clip.alpha=4")
    return clip.alpha


def check_fast_width(width: int, beta_inv: int, groups: int) -> None:
    """The Fast pathway is ``1 / beta_inv`` as wide as Slow: each of its layers needs at least one channel,
    and its grouped convolutions a whole number of channels a group."""
    if width // beta_inv < 1:
        raise StreamrecError(f"model.beta_inv {beta_inv} leaves the Fast pathway no channels at model.width {width} "
                             f"(Fast is width / beta_inv wide); use a beta_inv from 1 to {width} or a larger width")
    for scale in (1, 2, 4, 8):  # res2..res5
        inner = width * groups * scale // beta_inv
        if inner % groups:
            raise StreamrecError(f"model.groups {groups} does not divide the Fast pathway's {inner} channels "
                                 f"(model.width {width} x groups x {scale} / beta_inv {beta_inv}); use a width that "
                                 "beta_inv divides, or groups 1")


@register_model("slowfast", checkpoint_keys={"caffe2": caffe2_keys(SLOWFAST_CAFFE2_RULES),
                                              "pytorchvideo": pytorchvideo_keys(SLOWFAST_PYTORCHVIDEO_NAMES)})
def slowfast(
    *,
    clip: ClipConfig,
    num_classes: int,
    depth: int | Sequence[int] = 50,
    width: int = 64,
    beta_inv: int = 8,
    fusion_channel_ratio: int = 2,
    fusion_kernel: int = 5,
    stem_temporal_kernels: Sequence[int] = (1, 5),
    stem_spatial_kernel: int = 7,
    temporal_kernels: Sequence[Sequence[Sequence[int]]] = SLOWFAST_TEMPORAL_KERNELS,
    temporal_blocks: Sequence[Sequence[int]] | None = None,
    groups: int = 1,
    dropout: float = 0.5,
    head_average: str = "logits",
    train_crop_size: int | None = None,
) -> SlowFast:
    """SlowFast for a clip contract (alpha from ``clip.alpha``, head pooling from its frames and crop).

    - ``depth``: 50, 101, or four block counts for res2..res5;
    - ``width``: Slow stem channels (stage widths are 4, 8, 16, 32 times it); ``beta_inv``: Slow/Fast width ratio;
    - ``fusion_channel_ratio``, ``fusion_kernel``: the Fast->Slow lateral conv (output channels per Fast channel,
      temporal kernel);
    - ``stem_temporal_kernels``: [slow, fast]; ``temporal_kernels``: per stage, [slow, fast] patterns repeated over
      the blocks; ``temporal_blocks``: per stage, [slow, fast] counts of leading blocks that keep them (rest get 1);
    - ``head_average``: ``logits`` (PyTorchVideo) or ``softmax`` (PySlowFast), which matters only when the test
      crop exceeds ``train_crop_size`` (default ``clip.crop_size``), the crop that fixes the head pooling.
    """
    check_fast_width(width, beta_inv, groups)
    return SlowFast(num_classes=num_classes, alpha=slowfast_alpha(clip, "slowfast"), slow_frames=clip.slow_frames,
                    train_crop_size=training_crop(clip, train_crop_size), depth=depth, width=width, beta_inv=beta_inv,
                    fusion_channel_ratio=fusion_channel_ratio, fusion_kernel=fusion_kernel,
                    stem_temporal_kernels=stem_temporal_kernels, stem_spatial_kernel=stem_spatial_kernel,
                    temporal_kernels=temporal_kernels, temporal_blocks=temporal_blocks, groups=groups, dropout=dropout,
                    head_average=head_average)

