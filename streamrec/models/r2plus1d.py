"""R(2+1)D-18 (Tran et al., 2018) as torchvision builds it (``r2plus1d_18``): a ResNet-18 of basic
blocks whose 3x3x3 convolutions are factorised into a 1x3x3 spatial and a 3x1x1 temporal one,
with as many middle channels as keep the parameter count of the 3x3x3 (`middle_channels`).

Module names follow the project's PySlowFast style (``s2.pathway0_res0.branch2.a.conv_xy``);
torchvision's names (``layer1.0.conv1.0.0``) are renamed by the key map registered here. The
bottleneck R(2+1)D-50 of PyTorchVideo is a `streamrec.models.resnet3d` network (``factorized_b``).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import VideoNetwork, register_model
from streamrec.models.checkpoint_keys import rename, renamed_keys
from streamrec.models.resnet3d import (
    Conv2Plus1D,
    Head,
    PathwayStems,
    ResBlock,
    ResStage,
    batch_norm,
    head_pool_size,
    training_crop,
)

BASIC_STAGE_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # basic blocks in res2..res5


def middle_channels(in_channels: int, out_channels: int, kernel: int = 3) -> int:
    """The width between a factorised conv's two halves that matches a full KxKxK conv's parameters (torchvision's)."""
    return (in_channels * out_channels * kernel**3) // (in_channels * kernel**2 + kernel * out_channels)


class R2Plus1DStem(nn.Module):
    """1x7x7 convolution (spatial stride 2) to ``mid_channels``, then 3x1x1 to ``out_channels``; no pool."""

    def __init__(self, out_channels: int, mid_channels: int):
        super().__init__()
        self.conv = Conv2Plus1D(3, mid_channels, out_channels, temporal_kernel=3, spatial_kernel=7, temporal_stride=1,
                                spatial_stride=2, spatial_first=True)
        self.bn = batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class BasicBranch(nn.Module):
    """Two factorised 3x3x3 convolutions, the first strided in space and time; a `ResBlock`'s branch."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        middle = middle_channels(in_channels, out_channels)  # one width for both, from the block's input
        self.a = Conv2Plus1D(in_channels, middle, out_channels, temporal_kernel=3, spatial_kernel=3,
                             temporal_stride=stride, spatial_stride=stride, spatial_first=True)
        self.a_bn = batch_norm(out_channels)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = Conv2Plus1D(out_channels, middle, out_channels, temporal_kernel=3, spatial_kernel=3,
                             temporal_stride=1, spatial_stride=1, spatial_first=True)
        self.b_bn = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b_bn(self.b(self.a_relu(self.a_bn(self.a(x)))))


def _block(m: re.Match[str]) -> str:  # torchvision's layer1..layer4 are res2..res5
    return f"s{int(m[1]) + 1}.pathway0_res{m[2]}"


def _branch(m: re.Match[str]) -> str:  # conv1, conv2 are the branch's a, b
    return f"{_block(m)}.branch2.{'ab'[int(m[3]) - 1]}"


FACTORISED_PARTS = {"0": "conv_xy", "1": "bn", "3": "conv_t"}  # torchvision's Conv2Plus1D is a Sequential


# torchvision's VideoResNet names: stem.{0,1,3,4}, layerL.i.conv{1,2}.0.{0,1,3} (the factorised conv),
# layerL.i.conv{1,2}.1 (its batch norm), layerL.i.downsample.{0,1}, fc.
TORCHVISION_RENAMES = (
    rename(r"stem\.0\.(weight)", r"s1.pathway0_stem.conv.conv_xy.\1"),
    rename(r"stem\.1\.(\w+)", r"s1.pathway0_stem.conv.bn.\1"),
    rename(r"stem\.3\.(weight)", r"s1.pathway0_stem.conv.conv_t.\1"),
    rename(r"stem\.4\.(\w+)", r"s1.pathway0_stem.bn.\1"),
    rename(r"layer(\d)\.(\d+)\.conv([12])\.0\.([013])\.(\w+)",
           lambda m: f"{_branch(m)}.{FACTORISED_PARTS[m[4]]}.{m[5]}"),
    rename(r"layer(\d)\.(\d+)\.conv([12])\.1\.(\w+)", lambda m: f"{_branch(m)}_bn.{m[4]}"),
    rename(r"layer(\d)\.(\d+)\.downsample\.0\.(weight)", lambda m: f"{_block(m)}.branch1.{m[3]}"),
    rename(r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", lambda m: f"{_block(m)}.branch1_bn.{m[3]}"),
    rename(r"fc\.(weight|bias)", r"head.projection.\1"),
)


class R2Plus1D(VideoNetwork):
    """Arguments as in the `r2plus1d` builder, which holds the defaults."""

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, frames: int, train_crop_size: int, depth: int, width: int,
                 stem_mid_channels: int, dropout: float, head_average: str):
        super().__init__()
        if depth not in BASIC_STAGE_DEPTHS:
            raise StreamrecError(f"model.depth {depth} is not an R(2+1)D basic-block depth; use 18 or 34")
        self.s1 = PathwayStems([R2Plus1DStem(width, stem_mid_channels)])
        in_channels = width
        for stage, blocks in enumerate(BASIC_STAGE_DEPTHS[depth]):
            out_channels, stride = width * 2**stage, 1 if stage == 0 else 2
            self.add_module(f"s{stage + 2}", ResStage([[
                ResBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1,
                         BasicBranch(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1),
                         temporal_stride=stride if i == 0 else 1)
                for i in range(blocks)
            ]]))
            in_channels = out_channels
        # torchvision pools the whole final map; with train_crop_size unset the pool is the whole map at any crop
        self.head = Head([in_channels], num_classes, [head_pool_size(frames // 8, train_crop_size, 16)], dropout,
                         head_average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = self.s1(pathways)
        for stage in (self.s2, self.s3, self.s4, self.s5):
            x = stage(x)
        return self.head(x)


@register_model("r2plus1d", checkpoint_keys={"torchvision": renamed_keys(TORCHVISION_RENAMES)})
def r2plus1d(
    *,
    clip: ClipConfig,
    num_classes: int,
    depth: int = 18,
    width: int = 64,
    stem_mid_channels: int = 45,
    dropout: float = 0.0,
    head_average: str = "logits",
    train_crop_size: int | None = None,
) -> R2Plus1D:
    """R(2+1)D with basic blocks (torchvision's ``r2plus1d_18``) for a clip contract.

    - ``depth``: 18 or 34 (basic blocks per stage 2, 2, 2, 2 or 3, 4, 6, 3); ``width``: res2's
      channels (doubled per stage); ``stem_mid_channels``: between the stem's two convolutions;
    - ``dropout``, ``head_average``: as in `slowfast` (torchvision has no dropout and averages the
      pooled features, which is averaging logits); ``train_crop_size``: leave it unset to pool the
      whole final map as torchvision does at any crop.
    """
    if clip.alpha:
        raise StreamrecError("arch 'r2plus1d' is single-pathway: remove clip.alpha (or set it to null)")
    return R2Plus1D(num_classes=num_classes, frames=clip.num_frames,
                    train_crop_size=training_crop(clip, train_crop_size), depth=depth, width=width,
                    stem_mid_channels=stem_mid_channels, dropout=dropout, head_average=head_average)
