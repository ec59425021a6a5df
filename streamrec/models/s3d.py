"""S3D (Xie et al., 2018) as torchvision builds it (``s3d``): Inception-v1 in 3D with every 3x3x3
(and the 7x7x7 stem) separated into a 1xKxK spatial and a Kx1x1 temporal convolution.

Module names are Inception's (``mixed_4b.branch1.separable.temporal.conv``); torchvision's
positional names (``features.8.branch1.1.1.0``) are renamed by the key map registered here.
The head averages a 2xSxS window of the final map (S: the final map's side at the training
crop), classifies each window and averages the logits, as torchvision does.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import VideoNetwork, register_model
from streamrec.models.checkpoint_keys import rename, renamed_keys
from streamrec.models.resnet3d import Head, training_crop

BN_EPS, BN_MOMENTUM = 1e-3, 1e-3  # torchvision's S3D (TensorFlow's defaults)


class ConvBNReLU(nn.Module):
    """Convolution without bias, batch norm, ReLU (torchvision's ``Conv3dNormActivation``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), padding: tuple[int, int, int] = (0, 0, 0)):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class SeparableConv(nn.Module):
    """A KxKxK convolution as 1xKxK then Kx1x1, each with batch norm and ReLU, strided alike in space and time."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__()
        pad = kernel // 2
        self.spatial = ConvBNReLU(in_channels, out_channels, (1, kernel, kernel), (1, stride, stride), (0, pad, pad))
        self.temporal = ConvBNReLU(out_channels, out_channels, (kernel, 1, 1), (stride, 1, 1), (pad, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))


class SeparableInception(nn.Module):
    """Four branches concatenated: 1x1x1; 1x1x1 then separable 3x3x3 (twice, other widths); a 3x3x3
    max-pool then 1x1x1."""

    def __init__(self, in_channels: int, b0: int, b1_reduce: int, b1: int, b2_reduce: int, b2: int, b3: int):
        super().__init__()
        self.branch0 = ConvBNReLU(in_channels, b0)
        self.branch1 = nn.Module()
        self.branch1.reduce = ConvBNReLU(in_channels, b1_reduce)
        self.branch1.separable = SeparableConv(b1_reduce, b1, 3)
        self.branch2 = nn.Module()
        self.branch2.reduce = ConvBNReLU(in_channels, b2_reduce)
        self.branch2.separable = SeparableConv(b2_reduce, b2, 3)
        self.branch3 = nn.Module()
        self.branch3.pool = nn.MaxPool3d(3, stride=1, padding=1)
        self.branch3.project = ConvBNReLU(in_channels, b3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch0(x),
            self.branch1.separable(self.branch1.reduce(x)),
            self.branch2.separable(self.branch2.reduce(x)),
            self.branch3.project(self.branch3.pool(x)),
        ], dim=1)


# Inception-v1's mixed blocks: (name, in, b0, b1 reduce, b1, b2 reduce, b2, b3), with the max-pools before 4b and 5b.
MIXED = (
    ("mixed_3b", 192, 64, 96, 128, 16, 32, 32), ("mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 480, 192, 96, 208, 16, 48, 64), ("mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 512, 128, 128, 256, 24, 64, 64), ("mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 528, 256, 160, 320, 32, 128, 128),
    ("mixed_5b", 832, 256, 160, 320, 32, 128, 128), ("mixed_5c", 832, 384, 192, 384, 48, 128, 128),
)
# torchvision's ``features`` Sequential, position by position.
FEATURES = ("conv1", "pool1", "conv2", "conv3", "pool2", "mixed_3b", "mixed_3c", "pool3", "mixed_4b", "mixed_4c",
            "mixed_4d", "mixed_4e", "mixed_4f", "pool4", "mixed_5b", "mixed_5c")
TEMPORAL_STRIDE, SPATIAL_STRIDE = 8, 32


class S3D(VideoNetwork):
    """Arguments as in the `s3d` builder, which holds the defaults."""

    classifier_name = "head.projection"

    def __init__(self, *, num_classes: int, frames: int, train_crop_size: int, head_frames: int, dropout: float,
                 head_average: str):
        super().__init__()
        if frames // TEMPORAL_STRIDE < head_frames:
            raise StreamrecError(f"arch 's3d' needs clip.num_frames >= {TEMPORAL_STRIDE * head_frames} (its head "
                                 f"pools {head_frames} of every {TEMPORAL_STRIDE} frames); got {frames}")
        self.conv1 = SeparableConv(3, 64, 7, stride=2)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.conv2 = ConvBNReLU(64, 64)
        self.conv3 = SeparableConv(64, 192, 3)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        for name, *widths in MIXED:
            if name == "mixed_4b":
                self.pool3 = nn.MaxPool3d(3, stride=2, padding=1)
            if name == "mixed_5b":
                self.pool4 = nn.MaxPool3d(2, stride=2)
            self.add_module(name, SeparableInception(*widths))
        side = train_crop_size // SPATIAL_STRIDE
        self.head = Head([1024], num_classes, [(head_frames, side, side)], dropout, head_average)

    def forward(self, pathways: list[torch.Tensor]) -> torch.Tensor:
        x = pathways[0]
        for name in FEATURES:
            x = getattr(self, name)(x)
        return self.head([x])


def _feature(m: re.Match[str]) -> str:
    return FEATURES[int(m[1])]


CONV_BN = {"0": "conv", "1": "bn"}  # torchvision's Conv3dNormActivation is a Sequential
SPATIAL_TEMPORAL = {"0": "spatial", "1": "temporal"}
TORCHVISION_RENAMES = (
    rename(r"features\.(\d+)\.([01])\.([01])\.(\w+)",  # the separable stem convs (features.0, features.3)
           lambda m: f"{_feature(m)}.{SPATIAL_TEMPORAL[m[2]]}.{CONV_BN[m[3]]}.{m[4]}"),
    rename(r"features\.(\d+)\.([01])\.(\w+)", lambda m: f"{_feature(m)}.{CONV_BN[m[2]]}.{m[3]}"),  # features.2
    rename(r"features\.(\d+)\.branch0\.([01])\.(\w+)", lambda m: f"{_feature(m)}.branch0.{CONV_BN[m[2]]}.{m[3]}"),
    rename(r"features\.(\d+)\.branch([12])\.0\.([01])\.(\w+)",
           lambda m: f"{_feature(m)}.branch{m[2]}.reduce.{CONV_BN[m[3]]}.{m[4]}"),
    rename(r"features\.(\d+)\.branch([12])\.1\.([01])\.([01])\.(\w+)",
           lambda m: f"{_feature(m)}.branch{m[2]}.separable.{SPATIAL_TEMPORAL[m[3]]}.{CONV_BN[m[4]]}.{m[5]}"),
    rename(r"features\.(\d+)\.branch3\.1\.([01])\.(\w+)",
           lambda m: f"{_feature(m)}.branch3.project.{CONV_BN[m[2]]}.{m[3]}"),
    rename(r"classifier\.1\.(weight|bias)", r"head.projection.\1"),  # a 1x1x1 conv there, a linear layer here
)


@register_model("s3d", checkpoint_keys={"torchvision": renamed_keys(TORCHVISION_RENAMES)})
def s3d(
    *,
    clip: ClipConfig,
    num_classes: int,
    head_frames: int = 2,
    dropout: float = 0.2,
    head_average: str = "logits",
    train_crop_size: int | None = None,
) -> S3D:
    """S3D for a clip contract (torchvision's ``s3d``).

    - ``head_frames``: the temporal extent of the head's average pool, in final-map frames (1 per
      8 input frames); torchvision's 2 classifies every pair and averages;
    - ``dropout``, ``head_average``, ``train_crop_size``: as in `slowfast`.
    """
    if clip.alpha:
        raise StreamrecError("arch 's3d' is single-pathway: remove clip.alpha (or set it to null)")
    return S3D(num_classes=num_classes, frames=clip.num_frames, train_crop_size=training_crop(clip, train_crop_size),
               head_frames=head_frames, dropout=dropout, head_average=head_average)
