"""conv -> BatchNorm and Linear -> BatchNorm1d folds, module and functional forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import repfuse

from .helpers import F64, assert_equivalent, bn, ops, prepare

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class ConvBN(nn.Module):
    def __init__(self, conv: nn.Module, features: int, dims: int, affine: bool = True):
        super().__init__()
        self.conv = conv
        self.bn = bn(features, dims, affine=affine)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _input(dims: int, channels: int, size: int = 9) -> torch.Tensor:
    return torch.randn((2, channels) + (size,) * dims, dtype=F64)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "cin,cout,kwargs",
    [
        (4, 6, dict(kernel_size=3, padding=1)),
        (4, 6, dict(kernel_size=3, padding=1, bias=False)),
        (6, 6, dict(kernel_size=3, padding=1, groups=3)),
        (6, 6, dict(kernel_size=3, padding=1, groups=6)),  # depthwise
        (4, 8, dict(kernel_size=3, padding=2, dilation=2)),
        (4, 8, dict(kernel_size=3, stride=2)),
        (4, 4, dict(kernel_size=2, padding="same")),
        (4, 4, dict(kernel_size=3, padding=1, padding_mode="reflect")),
    ],
)
@pytest.mark.parametrize("affine", [True, False])
def test_conv_bn_folds(dims, cin, cout, kwargs, affine):
    model = prepare(ConvBN(CONV[dims](cin, cout, **kwargs), cout, dims, affine))
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 0
    assert_equivalent(model, fused, _input(dims, cin))


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "cin,cout,kwargs",
    [
        (4, 4, dict(kernel_size=3, stride=2, padding=1, output_padding=1)),
        (4, 6, dict(kernel_size=2, stride=2)),
        (6, 4, dict(kernel_size=3, padding=1, bias=False)),
        (4, 6, dict(kernel_size=3, stride=2, groups=2, dilation=2)),
    ],
)
def test_conv_transpose_bn_folds(dims, cin, cout, kwargs):
    model = prepare(ConvBN(CONV_TRANSPOSE[dims](cin, cout, **kwargs), cout, dims))
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 0
    assert isinstance(fused.conv, CONV_TRANSPOSE[dims])
    assert_equivalent(model, fused, _input(dims, cin, size=5))


def test_folded_conv_keeps_its_name_and_gains_a_bias():
    model = prepare(ConvBN(nn.Conv2d(3, 8, 3, bias=False), 8, 2))
    fused = repfuse.fuse(model)
    assert set(fused.state_dict()) == {"conv.weight", "conv.bias"}


class FunctionalConvBN(nn.Module):
    """``F.conv2d`` and ``F.batch_norm`` on parameters and buffers (get_attr nodes)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 2, 3, 3))
        self.bias = nn.Parameter(torch.randn(6))
        self.register_buffer("mean", torch.randn(6))
        self.register_buffer("var", torch.rand(6) + 0.5)
        self.gamma = nn.Parameter(torch.rand(6) + 0.5)
        self.beta = nn.Parameter(torch.randn(6))

    def forward(self, x):
        y = F.conv2d(x, self.weight, self.bias, stride=2, padding=1, groups=2)
        y = F.batch_norm(y, self.mean, self.var, self.gamma, self.beta, False, 0.1, 1e-3)
        return torch.relu(y)


def test_functional_conv_and_batch_norm_fold():
    model = FunctionalConvBN().eval().to(F64)
    fused = repfuse.fuse(model)
    assert ops(fused) == {"conv": 1, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 1}
    assert_equivalent(model, fused, _input(2, 4))


class LinearBN(nn.Module):
    def __init__(self, flatten: bool):
        super().__init__()
        self.flatten = flatten
        self.fc = nn.Linear(12, 5)
        self.bn = bn(5, 1)

    def forward(self, x):
        if self.flatten:
            x = torch.flatten(x, 1)
        return self.bn(self.fc(x))


def test_linear_bn1d_folds_on_2d_input_given_example_inputs():
    model = prepare(LinearBN(flatten=False))
    x = torch.randn(3, 12, dtype=F64)
    fused = repfuse.fuse(model, x)
    assert ops(fused)["linear"] == 1 and ops(fused)["bn"] == 0
    assert_equivalent(model, fused, x)


def test_linear_bn1d_folds_after_flatten_without_example_inputs():
    model = prepare(LinearBN(flatten=True))
    fused = repfuse.fuse(model)
    assert ops(fused)["linear"] == 1 and ops(fused)["bn"] == 0
    assert_equivalent(model, fused, torch.randn(3, 3, 4, dtype=F64))


class FunctionalLinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))
        self.bn = bn(4, 1, affine=False)

    def forward(self, x):
        return self.bn(F.linear(x.view(x.size(0), -1), self.w))


def test_functional_linear_bn1d_folds_after_view():
    model = prepare(FunctionalLinearBN())
    fused = repfuse.fuse(model)
    assert ops(fused)["linear"] == 1 and ops(fused)["bn"] == 0
    assert_equivalent(model, fused, torch.randn(3, 2, 3, dtype=F64))


def test_conv_bias_and_chained_batch_norms_fold_into_one_conv():
    model = prepare(nn.Sequential(nn.Conv2d(3, 4, 3), bn(4), bn(4), nn.Dropout(0.3)))
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 0 and ops(fused)["other"] == 0
    assert_equivalent(model, fused, _input(2, 3))


class MyBatchNorm(nn.BatchNorm2d):
    """A subclass that keeps BatchNorm's forward (for example to add a method)."""

    def describe(self):
        return "mine"


class MyConv(nn.Conv2d):
    pass


def test_subclasses_of_conv_and_batch_norm_fold():
    model = prepare(nn.Sequential(MyConv(3, 4, 3, padding=1), MyBatchNorm(4), nn.ReLU()))
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 0
    assert_equivalent(model, fused, _input(2, 3))


class OverridingBatchNorm(nn.BatchNorm2d):
    """A subclass with its own forward: traced through, not taken for a BatchNorm."""

    def forward(self, x):
        return x * 2


def test_a_subclass_that_overrides_forward_is_traced_through():
    model = prepare(nn.Sequential(nn.Conv2d(3, 4, 3), OverridingBatchNorm(4)))
    fused = repfuse.fuse(model)
    assert_equivalent(model, fused, _input(2, 3))


class FunctionalAnyRank(nn.Module):
    """``F.convNd`` or ``F.conv_transposeNd`` followed by ``F.batch_norm``, on buffers."""

    def __init__(self, dims: int, transposed: bool):
        super().__init__()
        self.dims, self.transposed = dims, transposed
        self.weight = nn.Parameter(torch.randn(4, 3, *(3,) * dims))
        self.bn = bn(12 if transposed else 4, dims)

    def forward(self, x):
        if self.transposed:
            conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[self.dims]
            y = conv(x, self.weight, None, 2, 1, 1, 4)
        else:
            conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.dims]
            y = conv(x, self.weight, None, 1, "same")
        b = self.bn
        return F.batch_norm(y, b.running_mean, b.running_var, b.weight, b.bias, False, 0.0, b.eps)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_functional_convs_of_every_rank_fold(dims, transposed):
    model = prepare(FunctionalAnyRank(dims, transposed))
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 0
    assert_equivalent(model, fused, _input(dims, 4 if transposed else 3, size=5))
