"""Channel concatenation of branches, and sums in every spelling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from .helpers import F64, bn, fuse_and_check, prepare


def conv_bn(cin, cout, k, **kwargs):
    return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False, **kwargs), bn(cout))


class Inception(nn.Module):
    """1x1, 3x3 and 5x5 conv-BN branches concatenated along channels."""

    def __init__(self, spelling="cat"):
        super().__init__()
        self.spelling = spelling
        self.b1 = conv_bn(8, 4, 1)
        self.b3 = conv_bn(8, 4, 3, padding=1)
        self.b5 = conv_bn(8, 4, 5, padding=2)

    def forward(self, x):
        branches = [self.b1(x), self.b3(x), self.b5(x)]
        if self.spelling == "concat":
            out = torch.concat(branches, dim=-3)
        elif self.spelling == "concatenate":
            out = torch.concatenate(branches, axis=1)
        else:
            out = torch.cat(branches, 1)
        return torch.relu(out)


@pytest.mark.parametrize("spelling", ["cat", "concat", "concatenate"])
def test_inception_branches_become_one_conv_under_the_maximal_policy(spelling):
    model = prepare(Inception(spelling))
    fused, report = fuse_and_check(model, torch.randn(2, 8, 7, 7, dtype=F64), {"conv": 1, "bn": 0}, policy="maximal")
    assert report.merges[0].result == "Conv2d 8->12 k5x5 s1x1 p2x2"


def test_inception_branches_stay_apart_under_the_cost_policy_and_stay_exact():
    model = prepare(Inception())
    _, report = fuse_and_check(
        model, torch.randn(2, 8, 7, 7, dtype=F64), {"conv": 3, "bn": 0}, reason="the cost policy keeps it apart"
    )
    assert len(report.merges) == 3


class Fire(nn.Module):
    """SqueezeNet Fire: squeeze 1x1, then expand 1x1 and 3x3 (reflect-padded here) concatenated."""

    def __init__(self):
        super().__init__()
        self.squeeze = nn.Conv2d(8, 4, 1)
        self.expand1 = nn.Conv2d(4, 6, 1)
        self.expand3 = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        return torch.relu(torch.cat([self.expand1(s), self.expand3(s)], 1))


def test_fire_module_expands_become_one_conv():
    model = Fire().to(F64)
    fused, report = fuse_and_check(model, torch.randn(2, 8, 6, 6, dtype=F64), {"conv": 2}, policy="maximal")
    assert report.merges[0].result == "Conv2d 4->12 k3x3 s1x1 p1x1 reflect"


class DenseConcat(nn.Module):
    """DenseNet-style: the input itself concatenated with a conv of it."""

    def __init__(self):
        super().__init__()
        self.conv = conv_bn(4, 2, 3, padding=1)

    def forward(self, x):
        return torch.cat([x, self.conv(x)], dim=1)


def test_concatenating_the_input_itself():
    model = prepare(DenseConcat())
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "bn": 0, "other": 0}, policy="maximal")


class WrongDim(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=2)


def test_concatenation_along_a_spatial_dim_is_not_merged():
    model = WrongDim().to(F64)
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 2, "other": 1}, reason="not the channel dim")


# -- sums -------------------------------------------------------------------------------------
class FiveBranches(nn.Module):
    """``relu(sum(b(x) for b in branches))`` over five conv-BN branches of several shapes."""

    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList(
            [
                conv_bn(6, 6, 3, padding=1),
                conv_bn(6, 6, 1),
                conv_bn(6, 6, (1, 3), padding=(0, 1)),
                conv_bn(6, 6, (3, 1), padding=(1, 0)),
                conv_bn(6, 6, 3, padding=2, dilation=2, groups=3),
            ]
        )

    def forward(self, x):
        return torch.relu(sum(branch(x) for branch in self.branches))


def test_five_conv_bn_branches_summed_with_sum_become_one_conv_and_a_relu():
    model = prepare(FiveBranches())
    fused, report = fuse_and_check(model, torch.randn(2, 6, 8, 7, dtype=F64), {"conv": 1, "bn": 0, "add": 0, "other": 1})
    assert report.merges[0].result == "Conv2d 6->6 k5x5 s1x1 p2x2"


class Stacked(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = conv_bn(4, 4, 3, padding=1)
        self.b = conv_bn(4, 4, 1)
        self.c = conv_bn(4, 4, 3)

    def forward(self, x):
        y = torch.stack([self.a(x), self.b(x), x]).sum(0)
        return torch.sum(torch.stack([self.c(y * 2)]), dim=0)


def test_stack_then_sum_over_the_new_dim_is_a_sum():
    model = prepare(Stacked())
    fused, report = fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 1, "bn": 0, "other": 0})
    assert "stack (torch.stack)" in report.merges[0].members


class OffsetWindows(nn.Module):
    """Branches whose windows align only through offsets: a 2x2 'same' (pads after) and a 2x2 padded before."""

    def __init__(self):
        super().__init__()
        self.after = nn.Conv2d(4, 4, 2, padding="same")
        self.before = nn.Conv2d(4, 4, 2)

    def forward(self, x):
        return self.after(x) + self.before(F.pad(x, [1, 0, 1, 0]))


def test_windows_that_align_through_offsets_merge():
    model = OffsetWindows().to(F64)
    fused, report = fuse_and_check(model, torch.randn(2, 4, 5, 6, dtype=F64), {"conv": 1, "add": 0, "pad": 0})
    assert report.merges[0].result == "Conv2d 4->4 k3x3 s1x1 p1x1"


class StackAlongChannels(nn.Module):
    """Stacking along dim 1 and summing over it is a sum too, but not one this rule reads."""

    def __init__(self):
        super().__init__()
        self.a = conv_bn(4, 4, 3, padding=1)
        self.b = conv_bn(4, 4, 1)

    def forward(self, x):
        return torch.stack([self.a(x), self.b(x)], dim=1).sum(1)


def test_stack_along_another_dim_is_left_as_it_is():
    model = prepare(StackAlongChannels())
    fuse_and_check(model, torch.randn(2, 4, 5, 5, dtype=F64), {"conv": 2, "bn": 0, "other": 2})
