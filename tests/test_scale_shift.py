"""Per-channel scales and shifts by constants, in every spelling, and where they do not fold."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from .helpers import F64, bn, fuse_and_check, prepare


class ConvBNThen(nn.Module):
    """conv-BN, then ``op(y, self.c)`` for a constant parameter ``c`` of ``shape``."""

    def __init__(self, op, shape, channels=4):
        super().__init__()
        self.op = op
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = bn(channels)
        self.c = nn.Parameter(torch.rand(shape) + 0.5)

    def forward(self, x):
        return torch.relu(self.op(self.bn(self.conv(x)), self.c))


SPELLINGS = {
    "mul": operator.mul,
    "rmul": lambda y, c: c * y,
    "torch.mul": torch.mul,
    "method mul": lambda y, c: y.mul(c),
    "div": operator.truediv,
    "torch.div": torch.div,
    "add": operator.add,
    "radd": lambda y, c: c + y,
    "torch.add alpha": lambda y, c: torch.add(y, c, alpha=-2.5),
    "torch.add reversed": lambda y, c: torch.add(c, y, alpha=0.5),
    "sub": operator.sub,
    "rsub": lambda y, c: c - y,
    "torch.sub": lambda y, c: torch.sub(y, c, alpha=3),
    "torch.rsub": lambda y, c: torch.rsub(y, c),
    "neg": lambda y, c: -y + c,
    "torch.neg": lambda y, c: torch.neg(y) * c,
    "imul": lambda y, c: operator.imul(y, c),
    "iadd": lambda y, c: operator.iadd(y, c),
    "isub": lambda y, c: operator.isub(y, c),
    "idiv": lambda y, c: operator.itruediv(y, c),
    "mul_": lambda y, c: y.mul_(c),
    "scalar": lambda y, c: (y * 2.0 - 1) / 4 * c,
}

# Layer scale: a (C,) parameter reshaped in the graph (the reshape is folded as a constant).
LAYER_SCALES = {
    "view": lambda y, c: y * c.view(1, -1, 1, 1),
    "index": lambda y, c: c[:, None, None] * y,
    "reshape and sqrt": lambda y, c: y * torch.sqrt(c).reshape(-1, 1, 1) + c.reshape(1, -1, 1, 1),
    "unsqueeze": lambda y, c: y * c.unsqueeze(-1).unsqueeze(-1),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (4, 1, 1), ()], ids=["1C11", "C11", "scalar"])
def test_per_channel_constants_fold_into_the_conv(spelling, shape):
    model = prepare(ConvBNThen(SPELLINGS[spelling], shape))
    fuse_and_check(model, torch.randn(2, 3, 5, 6, dtype=F64), {"conv": 1, "bn": 0, "add": 0, "other": 1})


@pytest.mark.parametrize("spelling", LAYER_SCALES)
def test_layer_scale_after_conv_bn_folds(spelling):
    model = prepare(ConvBNThen(LAYER_SCALES[spelling], (4,)))
    fused, _ = fuse_and_check(model, torch.randn(2, 3, 5, 6, dtype=F64), {"conv": 1, "bn": 0, "add": 0, "other": 1})
    assert [n.op for n in fused.graph.nodes] == ["placeholder", "call_module", "call_function", "output"]


def test_a_C_shaped_multiplier_on_nchw_is_not_a_channel_scale():
    # (C,) broadcasts over the last dim (width), which here has C positions too.
    model = prepare(ConvBNThen(operator.mul, (4,)))
    fused, _ = fuse_and_check(
        model, torch.randn(2, 3, 4, 4, dtype=F64), {"conv": 1, "bn": 0, "other": 2}, reason="varies along dim -1"
    )


def test_a_per_sample_multiplier_is_not_a_channel_scale():
    model = prepare(ConvBNThen(operator.mul, (2, 1, 1, 1)))
    fuse_and_check(model, torch.randn(2, 3, 4, 4, dtype=F64), {"conv": 1, "other": 2}, reason="varies along dim -4")


def test_a_constant_with_more_dims_than_the_tensor_is_not_folded():
    model = prepare(ConvBNThen(operator.mul, (1, 1, 4, 1, 1)))
    x = torch.randn(2, 3, 4, 4, dtype=F64)
    fuse_and_check(model, x, {"conv": 1, "other": 2}, reason="more dims")


class Product(nn.Module):
    """Squeeze-excitation style gating: a product of two computed tensors is not linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = bn(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * torch.sigmoid(y.mean((2, 3), keepdim=True)) / (y.abs() + 1)


def test_products_and_quotients_of_tensors_stay():
    model = prepare(Product())
    fused, _ = fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "bn": 0})
    targets = [node.target for node in fused.graph.nodes]
    assert operator.mul in targets and operator.truediv in targets


class ScaledResidual(nn.Module):
    """``0.5 * x + conv(x) * gamma``: scaled branches and a scaled input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.gamma = nn.Parameter(torch.rand(4, 1, 1))

    def forward(self, x):
        return torch.relu(0.5 * x + self.conv(x) * self.gamma - x / 4)


def test_scaled_residual_merges():
    model = ScaledResidual().to(F64)
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "add": 0, "other": 1})


class LinearScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.scale = nn.Parameter(torch.rand(5))
        self.shift = nn.Parameter(torch.rand(5))

    def forward(self, x):
        return self.fc(x) * self.scale + self.shift


def test_a_C_shaped_scale_after_a_linear_layer_is_a_channel_scale():
    model = LinearScale().to(F64)
    fuse_and_check(model, torch.randn(2, 3, 6, dtype=F64), {"linear": 1, "add": 0, "other": 0})


class InputNormalization(nn.Module):
    """``(x - mean) / std`` on the input before a convolution."""

    def __init__(self, padding):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3, 2, padding)

    def forward(self, x):
        return self.conv((x - self.mean) / self.std)


def test_input_normalization_folds_into_an_unpadded_conv():
    model = InputNormalization(0).to(F64)
    fuse_and_check(model, torch.randn(2, 3, 9, 9, dtype=F64), {"conv": 1, "add": 0, "other": 0})


def test_input_normalization_stays_before_a_zero_padded_conv():
    model = InputNormalization(1).to(F64)
    fuse_and_check(
        model, torch.randn(2, 3, 9, 9, dtype=F64), {"conv": 1}, reason="zero padding after a biased op"
    )


class PoolTimesWidthVector(nn.Module):
    """A width-shaped constant on a pooled input: it varies along a spatial dim, not channels."""

    def __init__(self, width):
        super().__init__()
        self.pool = nn.AvgPool2d(1)
        self.c = nn.Parameter(torch.rand(width) + 0.5)
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(self.pool(x) * self.c)


def test_a_width_vector_on_a_uniform_map_is_not_a_channel_scale():
    model = PoolTimesWidthVector(9).to(F64)
    fuse_and_check(model, torch.randn(2, 4, 9, 9, dtype=F64), {"conv": 1}, reason="varies along dim -1")


def test_a_constant_divided_by_a_tensor_stays():
    model = prepare(ConvBNThen(lambda y, c: c / (y * y + 1), (1, 4, 1, 1)))
    fused, _ = fuse_and_check(model, torch.randn(2, 3, 4, 4, dtype=F64), {"conv": 1, "bn": 0})
    assert operator.truediv in [node.target for node in fused.graph.nodes]
