"""Average pooling and padding, as branches and in sequence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from .helpers import F64, bn, fuse_and_check, prepare


class PoolBranch(nn.Module):
    """DBB-style: ``conv3x3(x) + BN(avgpool3x3(x))``."""

    def __init__(self, pool: nn.Module, dims: int = 2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.conv = conv(4, 4, 3, padding=1, stride=pool.stride if hasattr(pool, "stride") else 1)
        self.pool = pool
        self.bn = bn(4, dims)

    def forward(self, x):
        return torch.relu(self.conv(x) + self.bn(self.pool(x)))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_avg_pool_branch_counting_padding_merges(dims):
    pool = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims](3, 1, 1, count_include_pad=True)
    model = prepare(PoolBranch(pool, dims))
    x = torch.randn((2, 4) + (5,) * dims, dtype=F64)
    fuse_and_check(model, x, {"conv": 1, "bn": 0, "add": 0, "other": 1})


def test_strided_avg_pool_branch_merges():
    model = prepare(PoolBranch(nn.AvgPool2d(3, 2, 1)))
    fuse_and_check(model, torch.randn(2, 4, 7, 8, dtype=F64), {"conv": 1, "bn": 0, "add": 0, "other": 1})


def test_avg_pool_branch_not_counting_padding_is_not_merged():
    model = prepare(PoolBranch(nn.AvgPool2d(3, 1, 1, count_include_pad=False)))
    fuse_and_check(
        model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "add": 1}, reason="count_include_pad=False"
    )


def test_avg_pool_with_a_divisor_override_is_not_merged():
    model = prepare(PoolBranch(nn.AvgPool2d(3, 1, 1, divisor_override=4)))
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "add": 1}, reason="divisor_override")


class PoolThenConv(nn.Module):
    def __init__(self, ceil_mode=False, functional=False):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=ceil_mode)
        self.functional = functional
        self.bn = bn(6)

    def forward(self, x):
        y = F.avg_pool2d(x, 2) if self.functional else self.pool(x)
        return self.bn(self.conv(y))


@pytest.mark.parametrize("functional", [False, True])
def test_avg_pool_then_pointwise_conv_is_one_strided_conv(functional):
    model = prepare(PoolThenConv(functional=functional))
    fused, _ = fuse_and_check(model, torch.randn(2, 4, 8, 6, dtype=F64), {"conv": 1, "bn": 0, "other": 0})
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.kernel_size == (2, 2) and conv.stride == (2, 2)


def test_ceil_mode_merges_only_where_shapes_show_it_changes_nothing():
    model = prepare(PoolThenConv(ceil_mode=True))
    even = torch.randn(2, 4, 8, 6, dtype=F64)
    fuse_and_check(model, even, {"conv": 1, "other": 1}, reason="input shape is unknown")
    fuse_and_check(model, even, {"conv": 1, "other": 0}, example_inputs=even)
    odd = torch.randn(2, 4, 7, 6, dtype=F64)
    fuse_and_check(model, odd, {"conv": 1, "other": 1}, reason="partial window", example_inputs=odd)


# -- padding ------------------------------------------------------------------------------
class PadThenConv(nn.Module):
    def __init__(self, pad: nn.Module | None, amounts=None, mode="constant", value=0.0, conv_padding=0, conv_mode="zeros"):
        super().__init__()
        self.pad = pad
        self.amounts, self.mode, self.value = amounts, mode, value
        self.conv = nn.Conv2d(4, 4, 3, padding=conv_padding, padding_mode=conv_mode)

    def forward(self, x):
        if self.pad is not None:
            x = self.pad(x)
        else:
            x = F.pad(x, self.amounts, self.mode, self.value if self.mode == "constant" else None)
        return self.conv(x)


@pytest.mark.parametrize(
    "pad,mode",
    [
        (nn.ZeroPad2d(1), "zeros"),
        (nn.ConstantPad2d(2, 0.0), "zeros"),
        (nn.ReflectionPad2d(1), "reflect"),
        (nn.ReplicationPad2d(1), "replicate"),
        (nn.CircularPad2d(1), "circular"),
    ],
    ids=["zero", "constant0", "reflect", "replicate", "circular"],
)
def test_padding_modules_merge_into_the_conv(pad, mode):
    model = PadThenConv(pad).to(F64)
    fused, _ = fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "pad": 0, "other": 0})
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.padding_mode == mode


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_functional_pad_merges_into_the_conv(mode):
    model = PadThenConv(None, [1, 1, 2, 2], mode).to(F64)
    fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "pad": 0})


def test_asymmetric_zero_pad_becomes_an_explicit_pad_and_a_conv():
    model = PadThenConv(None, [0, 1, 2, 0]).to(F64)
    fused, report = fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "pad": 1})
    assert "p(2,0)x(0,1)" in report.merges[0].result


def test_zero_pad_before_a_zero_padded_conv_adds_up():
    model = PadThenConv(nn.ZeroPad2d(1), conv_padding=1).to(F64)
    fused, _ = fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "pad": 0})
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.padding == (2, 2)


def test_reflect_pad_before_a_zero_padded_conv_is_not_merged():
    model = PadThenConv(nn.ReflectionPad2d(1), conv_padding=1).to(F64)
    fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "other": 1}, reason="padding of a result")


def test_padding_with_a_non_zero_constant_is_not_merged():
    model = PadThenConv(nn.ConstantPad2d(1, 0.5)).to(F64)
    fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "other": 1}, reason="constant 0.5")


class ConvThenPad(nn.Module):
    """A biased conv, then zero padding, then a conv: the padded zeros are not conv(0)."""

    def __init__(self, bias):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 1, bias=bias)
        self.b = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.b(F.pad(self.a(x), [1, 1, 1, 1]))


def test_zero_pad_after_a_biased_conv_is_not_merged_into_it():
    model = ConvThenPad(bias=True).to(F64)
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 2}, reason="zero padding after a biased op")


def test_zero_pad_after_an_unbiased_pointwise_conv_merges():
    model = ConvThenPad(bias=False).to(F64)
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "pad": 0})


class SamePaddingBranches(nn.Module):
    """padding='same' and 'valid' spelled on the modules."""

    def __init__(self):
        super().__init__()
        self.even = nn.Conv2d(4, 4, (2, 4), padding="same")
        self.odd = nn.Conv2d(4, 4, 3, padding="same")
        self.valid = nn.Conv2d(4, 4, 1, padding="valid")

    def forward(self, x):
        return self.even(x) + self.odd(x) + self.valid(x)


def test_same_and_valid_padding_branches_merge():
    model = SamePaddingBranches().to(F64)
    fused, report = fuse_and_check(model, torch.randn(2, 4, 6, 7, dtype=F64), {"conv": 1, "add": 0})
    assert report.merges[0].result.startswith("Conv2d 4->4 k3x4")


@pytest.mark.parametrize("dims", [1, 2])
def test_zero_padded_pool_after_batch_norm_starts_anew_one_channel_wide(dims):
    """The pool is not merged into the (biased) BatchNorm before it; the BatchNorm after it still
    folds into the pool's value, which must stay the pool's own one-channel map."""
    pool = {1: nn.AvgPool1d, 2: nn.AvgPool2d}[dims](2, 1, 1)
    model = prepare(nn.Sequential(bn(4, dims), pool, nn.Identity(), bn(4, dims)))
    x = torch.randn(2, 4, *[9] * dims, dtype=F64)
    fuse_and_check(model, x, {"conv": 1, "bn": 1}, reason="zero padding after a biased op", example_inputs=x)
