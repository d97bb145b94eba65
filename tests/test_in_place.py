"""Activations that read only a merged convolution's output run in place, and no others."""

from __future__ import annotations

import torch
from torch import nn

import repfuse
from repfuse.models import MobileOneBlock

from .helpers import F64, assert_equivalent, bn, prepare
from .test_branches import RepVGGBlock


def activations(model: nn.Module) -> dict[str, bool]:
    return {name: m.inplace for name, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.SiLU))}


def test_an_activation_after_a_merged_conv_runs_in_place_and_the_input_model_keeps_its_own():
    model = prepare(nn.Sequential(MobileOneBlock(4, 4, 3, branches=2), MobileOneBlock(4, 4, 1, branches=2)))
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    fused = repfuse.fuse(model, x, verify=True)
    assert all(activations(fused).values()) and len(activations(fused)) == 2
    assert not any(activations(model).values())
    assert_equivalent(model, fused, x)


def test_a_functional_relu_after_a_merged_conv_runs_in_place():
    model = prepare(nn.Sequential(RepVGGBlock(4), RepVGGBlock(4)))
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    fused = repfuse.fuse(model, x, verify=True)
    targets = [n.target for n in fused.graph.nodes if n.op == "call_function"]
    assert targets == [torch.relu_, torch.relu_]
    assert_equivalent(model, fused, x)


class ConvBNActivation(nn.Module):
    def __init__(self, activation: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = bn(4)
        self.act = activation


class Reused(ConvBNActivation):
    """ResNet's pattern: one ReLU after a conv-BN and again after the residual add."""

    def __init__(self):
        super().__init__(nn.ReLU())

    def forward(self, x):
        return self.act(self.act(self.bn(self.conv(x))) * x)


class ReadTwice(ConvBNActivation):
    def __init__(self):
        super().__init__(nn.SiLU())

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.act(y) * y


class OnTheInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = bn(4)

    def forward(self, x):
        return self.bn(self.conv(self.act(x))) + x


def test_an_activation_stays_as_it_is_where_another_op_could_see_its_input_change():
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    for model in (Reused(), ReadTwice(), OnTheInput()):
        model = prepare(model)
        fused = repfuse.fuse(model, x, verify=True)
        assert not any(activations(fused).values()), type(model).__name__
        assert_equivalent(model, fused, x)


def test_a_hooked_activation_stays_as_it_is():
    model = prepare(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), bn(4), nn.ReLU()))
    seen = []
    model[2].register_forward_hook(lambda module, args, output: seen.append(args[0].min().item()))
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    fused = repfuse.fuse(model, x)
    assert not any(activations(fused).values())
    fused(x)
    assert seen and seen[-1] < 0  # the hook still sees the activation's input as it was
