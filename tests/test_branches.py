"""Sums of branches on one input: RepVGG-style blocks in every spelling of add."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

import repfuse

from .helpers import F64, assert_equivalent, bn, ops, prepare


def conv_bn(cin, cout, k, stride=1, padding=0, dilation=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False),
        bn(cout),
    )


class RepVGGBlock(nn.Module):
    """3x3 conv-BN + 1x1 conv-BN + BN identity, summed, then ReLU."""

    def __init__(self, channels, stride=1, groups=1, dilation=1):
        super().__init__()
        self.dense = conv_bn(channels, channels, 3, stride, dilation, dilation, groups)
        self.pointwise = conv_bn(channels, channels, 1, stride, 0, 1, groups)
        self.identity = bn(channels) if stride == 1 else None

    def forward(self, x):
        out = self.dense(x) + self.pointwise(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return torch.relu(out)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(stride=2), dict(groups=4), dict(dilation=2), dict(groups=2, dilation=3)],
    ids=["plain", "stride2", "groups", "dilated", "grouped-dilated"],
)
def test_repvgg_block_becomes_one_conv(kwargs):
    model = prepare(RepVGGBlock(8, **kwargs))
    x = torch.randn(2, 8, 12, 11, dtype=F64)
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused) == {"conv": 1, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 1}
    assert_equivalent(model, fused, x)
    assert len(report.merges) == 1
    assert len(report.merges[0].members) == 5 + 2 * ("stride" not in kwargs)
    assert report.after.batch_norms == 0 and report.before.batch_norms == 2 + ("stride" not in kwargs)


class Spelled(nn.Module):
    """Three branches and the input itself, summed in the given spelling."""

    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling
        self.a = conv_bn(6, 6, 3, padding=1)
        self.b = conv_bn(6, 6, 1)
        self.c = bn(6)
        self.skip = nn.Identity()

    def forward(self, x):
        if self.spelling == "generator":
            out = sum(branch(x) for branch in (self.a, self.b, self.c, self.skip))
            return torch.relu(out)
        a, b, c, skip = self.a(x), self.b(x), self.c(x), self.skip(x)
        if self.spelling == "sum":
            out = sum([a, b, c, skip])
        elif self.spelling == "torch.add":
            out = torch.add(torch.add(a, b, alpha=0.5), torch.add(c, skip, alpha=2))
        elif self.spelling == "iadd":
            out = a
            out += b
            out += c
            out += skip
        elif self.spelling == "method":
            out = skip.add(c).add(a.add(b))
        elif self.spelling == "operator.iadd":
            out = operator.iadd(operator.iadd(a, b), operator.add(skip, c))
        else:  # nested, identity first
            out = skip + ((c + a) + b)
        return torch.relu(out)


@pytest.mark.parametrize(
    "spelling", ["sum", "generator", "torch.add", "iadd", "method", "operator.iadd", "nested"]
)
def test_every_spelling_of_add_merges(spelling):
    model = prepare(Spelled(spelling))
    x = torch.randn(2, 6, 7, 8, dtype=F64)
    fused = repfuse.fuse(model)
    assert ops(fused) == {"conv": 1, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 1}
    assert_equivalent(model, fused, x)


class Residual(nn.Module):
    """``x + f(x)`` where f is conv-BN: the residual becomes part of the conv."""

    def __init__(self):
        super().__init__()
        self.f = conv_bn(5, 5, 3, padding=1, groups=5)

    def forward(self, x):
        return torch.relu(x + self.f(x))


def test_residual_of_a_conv_merges():
    model = prepare(Residual())
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["add"] == 0 and ops(fused)["bn"] == 0
    assert fused.get_submodule("f.0").groups == 5
    assert_equivalent(model, fused, torch.randn(2, 5, 6, 6, dtype=F64))


class ACNet(nn.Module):
    """Asymmetric kernels 3x3 + 1x3 + 3x1 (ACNet)."""

    def __init__(self):
        super().__init__()
        self.square = conv_bn(4, 4, (3, 3), padding=(1, 1))
        self.hor = conv_bn(4, 4, (1, 3), padding=(0, 1))
        self.ver = conv_bn(4, 4, (3, 1), padding=(1, 0))

    def forward(self, x):
        return self.square(x) + self.hor(x) + self.ver(x)


def test_asymmetric_kernels_merge_into_the_square():
    model = prepare(ACNet())
    fused = repfuse.fuse(model)
    assert ops(fused) == {"conv": 1, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 0}
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.kernel_size == (3, 3)
    assert_equivalent(model, fused, torch.randn(2, 4, 7, 9, dtype=F64))


class Conv1dBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv1d(4, 4, 5, padding=2), bn(4, 1))
        self.b = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), bn(4, 1))

    def forward(self, x):
        return self.a(x) + self.b(x) + x


def test_branches_in_one_dimension():
    model = prepare(Conv1dBranches())
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["add"] == 0
    assert_equivalent(model, fused, torch.randn(2, 4, 10, dtype=F64))


class Conv3dBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1, groups=2), bn(4, 3))
        self.b = nn.Sequential(nn.Conv3d(4, 4, 1), bn(4, 3))

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_branches_in_three_dimensions_with_mixed_groups():
    model = prepare(Conv3dBranches())
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and ops(fused)["add"] == 0
    assert_equivalent(model, fused, torch.randn(2, 4, 5, 6, 5, dtype=F64))


class LinearResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(x) + x


def test_linear_plus_its_input_merges_on_any_rank():
    model = LinearResidual().to(F64)
    fused = repfuse.fuse(model)
    assert ops(fused) == {"conv": 0, "linear": 1, "bn": 0, "add": 0, "pad": 0, "other": 0}
    assert_equivalent(model, fused, torch.randn(2, 3, 6, dtype=F64))


class Stacked(nn.Module):
    """Two RepVGG blocks in a row: two regions, one conv each."""

    def __init__(self):
        super().__init__()
        self.one = RepVGGBlock(4)
        self.two = RepVGGBlock(4, stride=2)

    def forward(self, x):
        return self.two(self.one(x))


def test_consecutive_blocks_become_consecutive_convs():
    model = prepare(Stacked())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 2 and ops(fused)["bn"] == 0 and ops(fused)["add"] == 0
    assert sorted(m.module for m in report.merges) == ["one.fused", "two.fused"]
    assert_equivalent(model, fused, torch.randn(2, 4, 9, 9, dtype=F64))


class Doubled(nn.Module):
    """One value read twice by the same add: ``y + y``."""

    def __init__(self):
        super().__init__()
        self.conv = conv_bn(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y + y


def test_a_value_read_twice_by_one_op_merges():
    model = prepare(Doubled())
    fused = repfuse.fuse(model)
    assert ops(fused) == {"conv": 1, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 0}
    assert_equivalent(model, fused, torch.randn(2, 4, 5, 5, dtype=F64))


class DoubledIdentity(nn.Module):
    def __init__(self):
        super().__init__()
        self.keep = nn.Identity()

    def forward(self, x):
        y = self.keep(x)
        return y + y


def test_an_identity_read_twice_by_an_unmerged_op_is_removed_once(recwarn):
    """The add stays (no convolution to merge it into); the identity under it is one region, not two."""
    model = prepare(DoubledIdentity())
    fused, report = repfuse.fuse(model, return_report=True)
    assert [m.members for m in report.merges] == [("keep (Identity)",)]
    assert ops(fused)["add"] == 1 and not any(n.op == "call_module" for n in fused.graph.nodes)
    assert not [w for w in recwarn if "erase_node" in str(w.message)]
    assert_equivalent(model, fused, torch.randn(2, 4, 5, 5, dtype=F64))
