"""Small versions of real architectures, written for the tests (random weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet's basic block: ``out += identity``, with a 1x1 conv-BN downsample where shapes change."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        identity = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual where shapes allow."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn(cin, hidden, 1),
            nn.ReLU6(),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(),
            conv_bn(hidden, cout, 1),
        )

    def forward(self, x):
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8, 3, 2),
            nn.ReLU6(),
            InvertedResidual(8, 8, 1, 1),
            InvertedResidual(8, 12, 2, 6),
            InvertedResidual(12, 12, 1, 6),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(12, 5))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class InceptionBlock(nn.Module):
    """1x1, 1x1-3x3, 1x1-5x5 and pool-1x1 branches, concatenated."""

    def __init__(self, cin=8):
        super().__init__()
        self.b1 = conv_bn(cin, 4, 1)
        self.b3 = nn.Sequential(conv_bn(cin, 4, 1), nn.ReLU(), conv_bn(4, 4, 3))
        self.b5 = nn.Sequential(conv_bn(cin, 2, 1), nn.ReLU(), conv_bn(2, 4, 5))
        self.pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_bn(cin, 4, 1))

    def forward(self, x):
        return F.relu(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1))


class DataDependent(nn.Module):
    """A block with data-dependent control flow, which torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.a = conv_bn(8, 8, 3)
        self.b = conv_bn(8, 8, 1)

    def forward(self, x):
        if x.mean() > 0:
            return self.a(x) + self.b(x)
        return self.a(x) - x


class WithControlFlow(nn.Module):
    """A traceable model with one untraceable submodule in the middle."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, 3)
        self.block = DataDependent()
        self.head = nn.Sequential(conv_bn(8, 8, 3), nn.ReLU())
        self.skip = conv_bn(8, 8, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.block(x)
        return self.head(y) + self.skip(y)


class Attention(nn.Module):
    """A transformer block: LayerNorm, multi-head self-attention, MLP, residuals."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(y) * self.scale
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class UNetDecoder(nn.Module):
    """Upsampling with ConvTranspose + BN, skip concatenation, conv-BN."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())
        self.bottom = nn.Sequential(conv_bn(8, 16, 3, 2), nn.ReLU())
        self.up1 = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, 2), nn.BatchNorm2d(8), nn.ReLU())
        self.merge1 = nn.Sequential(conv_bn(16, 8, 3), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(8, 4, 2, 2, bias=False), nn.BatchNorm2d(4))
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        d = self.down(x)
        u = self.up1(self.bottom(d))
        u = self.merge1(torch.cat([u, d], 1))
        return self.out(F.relu(self.up2(u)))


class Hooked(nn.Module):
    """A RepVGG-style block with a forward hook and a pre-hook on it."""

    def __init__(self, log: list):
        super().__init__()
        self.block = RepBlock(8)
        self.head = conv_bn(8, 4, 1)
        self.block.register_forward_hook(lambda module, inputs, output: log.append(("post", tuple(output.shape))))
        self.block.register_forward_pre_hook(lambda module, inputs: log.append(("pre", tuple(inputs[0].shape))))

    def forward(self, x):
        return self.head(self.block(x))


class RepBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.dense = conv_bn(channels, channels, 3)
        self.point = conv_bn(channels, channels, 1)
        self.identity = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.dense(x) + self.point(x) + self.identity(x))


class Untraceable(nn.Module):
    """Data-dependent control flow and nothing inside it to fuse."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return -x


def small_resnet() -> nn.Module:
    """A factory for the command line: a ResNet in eval mode."""
    return ResNet().eval()
