"""MobileOne (Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone", CVPR 2023)
in its train-time, multi-branch form.

Each block sums ``k`` conv-BN branches, a 1x1 conv-BN "scale" branch (when the kernel
is larger than 1x1) and a BatchNorm skip (when input and output shapes agree), then
applies squeeze-excitation (S4's later blocks) and ReLU.  A stage alternates depthwise
3x3 blocks and pointwise 1x1 blocks.  The model is plain ``nn`` layers: it has no
merge or re-parameterization code; ``repfuse.fuse`` turns it into the deploy form.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

#: Per variant: width multipliers of stages 1-4, conv branches per block, squeeze-excitation.
VARIANTS = {
    "s0": dict(widths=(0.75, 1.0, 1.0, 2.0), branches=4, use_se=False),
    "s1": dict(widths=(1.5, 1.5, 2.0, 2.5), branches=1, use_se=False),
    "s2": dict(widths=(1.5, 2.0, 2.5, 4.0), branches=1, use_se=False),
    "s3": dict(widths=(2.0, 2.5, 3.0, 4.0), branches=1, use_se=False),
    "s4": dict(widths=(3.0, 3.5, 3.5, 4.0), branches=1, use_se=True),
}
#: Blocks (depthwise + pointwise pairs) in stages 1-4.
STAGE_DEPTHS = (2, 8, 10, 1)
STAGE_CHANNELS = (64, 128, 256, 512)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int) -> nn.Sequential:
    """A bias-free convolution with "same"-style padding followed by BatchNorm."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        )
    )


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * sigmoid(expand(relu(reduce(mean_hw(x)))))``."""

    def __init__(self, channels: int, ratio: float = 0.0625):
        super().__init__()
        hidden = int(channels * ratio)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = torch.sigmoid(self.expand(F.relu(self.reduce(scale))))
        return x * scale


class MobileOneBlock(nn.Module):
    """``relu(se(sum_k convbn_k(x) + convbn_1x1(x) + bn(x)))`` in train-time form.

    The 1x1 scale branch exists for kernels larger than 1x1 and the BatchNorm skip
    where input and output shapes agree; ``use_scale``/``use_skip`` drop them anyway.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        branches: int = 1,
        use_se: bool = False,
        use_scale: bool = True,
        use_skip: bool = True,
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            conv_bn(in_channels, out_channels, kernel_size, stride, groups) for _ in range(branches)
        )
        has_scale = use_scale and kernel_size > 1
        has_skip = use_skip and in_channels == out_channels and stride == 1
        self.scale = conv_bn(in_channels, out_channels, 1, stride, groups) if has_scale else None
        self.skip = nn.BatchNorm2d(in_channels) if has_skip else None
        self.se = SqueezeExcite(out_channels) if use_se else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = sum(conv(x) for conv in self.convs)
        if self.scale is not None:
            out = out + self.scale(x)
        if self.skip is not None:
            out = out + self.skip(x)
        return self.act(self.se(out))


class MobileOne(nn.Module):
    """A stem block, four stages of depthwise/pointwise block pairs, pooling and a classifier."""

    def __init__(
        self,
        widths: tuple[float, float, float, float],
        branches: int = 1,
        use_se: bool = False,
        num_classes: int = 1000,
        depths: tuple[int, int, int, int] = STAGE_DEPTHS,
    ):
        super().__init__()
        self.num_classes = num_classes
        channels = min(64, int(64 * widths[0]))
        self.stage0 = MobileOneBlock(3, channels, 3, stride=2)
        stages = []
        for index, (depth, base, width) in enumerate(zip(depths, STAGE_CHANNELS, widths)):
            se_blocks = 0
            if use_se and index == 2:
                se_blocks = depth // 2
            elif use_se and index == 3:
                se_blocks = depth
            stage, channels = self._stage(channels, int(base * width), depth, se_blocks, branches)
            stages.append(stage)
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)

    @staticmethod
    def _stage(channels: int, planes: int, depth: int, se_blocks: int, branches: int) -> tuple[nn.Sequential, int]:
        blocks = []
        for index in range(depth):
            stride = 2 if index == 0 else 1
            use_se = index >= depth - se_blocks
            blocks.append(MobileOneBlock(channels, channels, 3, stride, channels, branches, use_se))
            blocks.append(MobileOneBlock(channels, planes, 1, 1, 1, branches, use_se))
            channels = planes
        return nn.Sequential(*blocks), channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = torch.flatten(self.gap(x), 1)
        return self.linear(x)


def mobileone(variant: str = "s0", num_classes: int = 1000) -> MobileOne:
    """MobileOne ``variant`` (``"s0"`` ... ``"s4"``) in train-time form, with random weights."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MobileOne variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return MobileOne(**VARIANTS[variant], num_classes=num_classes)
