"""MobileOne's deploy form, re-parameterized by hand as the paper describes.

An oracle independent of repfuse's algebra: for each train-time block, every conv-BN
branch is folded (``W * gamma / std``, ``beta - mean * gamma / std``), the 1x1 scale
branch is zero-padded to the kernel size, the BatchNorm skip becomes an identity
kernel (``1`` at the centre tap of ``W[o, o mod (C/G)]``) scaled by its BatchNorm,
and the kernels and biases are summed into one convolution per block.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from repfuse.models import MobileOneBlock


def _fold(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = (bn.running_var.double() + bn.eps).sqrt()
    gamma = bn.weight.double()
    kernel = weight.double() * (gamma / std).reshape(-1, 1, 1, 1)
    bias = bn.bias.double() - bn.running_mean.double() * gamma / std
    return kernel, bias


def block_kernel_bias(block: MobileOneBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """The deploy kernel and bias of one train-time block, computed in float64."""
    reference = block.convs[0].conv
    k = reference.kernel_size[0]
    groups = reference.groups
    kernel = torch.zeros(reference.weight.shape, dtype=torch.float64)
    bias = torch.zeros(reference.out_channels, dtype=torch.float64)
    for branch in block.convs:
        w, b = _fold(branch.conv.weight, branch.bn)
        kernel += w
        bias += b
    if block.scale is not None:
        w, b = _fold(block.scale.conv.weight, block.scale.bn)
        pad = k // 2
        kernel += torch.nn.functional.pad(w, [pad, pad, pad, pad])
        bias += b
    if block.skip is not None:
        channels = reference.in_channels
        per_group = channels // groups
        identity = torch.zeros(channels, per_group, k, k, dtype=torch.float64)
        for o in range(channels):
            identity[o, o % per_group, k // 2, k // 2] = 1
        w, b = _fold(identity, block.skip)
        kernel += w
        bias += b
    return kernel, bias


class DeployBlock(nn.Module):
    """``relu(se(conv(x)))`` with the block's re-parameterized convolution."""

    def __init__(self, conv: nn.Conv2d, se: nn.Module, act: nn.Module):
        super().__init__()
        self.reparam_conv = conv
        self.se = se
        self.act = act

    def forward(self, x):
        return self.act(self.se(self.reparam_conv(x)))


def deploy_block(block: MobileOneBlock) -> DeployBlock:
    reference = block.convs[0].conv
    weight = reference.weight
    kernel, bias = block_kernel_bias(block)
    conv = nn.Conv2d(
        reference.in_channels,
        reference.out_channels,
        reference.kernel_size,
        reference.stride,
        reference.padding,
        groups=reference.groups,
        bias=True,
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return DeployBlock(conv, block.se, block.act)


def deploy_mobileone(model: nn.Module) -> nn.Module:
    """A copy of a train-time MobileOne with every block in deploy form."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, MobileOneBlock):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, deploy_block(module))
    return model
