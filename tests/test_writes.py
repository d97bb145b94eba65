"""Models that write into tensors in place: merges never move a read across a write."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import repfuse

from .helpers import EXACT, F64, bn, ops, prepare


def outputs_match(model: nn.Module, fused: nn.Module, shape=(2, 3, 7, 7)) -> None:
    """Both models on copies of one input (either may write into it): every output, and the input after."""
    x = torch.randn(shape, dtype=F64)
    x_model, x_fused = x.clone(), x.clone()
    with torch.no_grad():
        expected, actual = model(x_model), fused(x_fused)
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert repfuse.relative_error(a, e) < EXACT
    assert repfuse.relative_error(x_fused, x_model) < EXACT


def reasons(report) -> str:
    return "\n".join(r.reason for r in report.refusals)


class AugmentedAlias(nn.Module):
    """``a += conv(a)`` while ``skip`` still names ``a``: both outputs are the sum."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 3, 3, padding=1)
        self.second = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        a = self.first(x)
        skip = a
        a += self.second(a)
        return a, skip


def test_augmented_assignment_is_traced_as_a_write():
    model = prepare(AugmentedAlias())
    fused = repfuse.fuse(model)
    assert any(n.target is __import__("operator").iadd for n in fused.graph.nodes)
    outputs_match(model, fused)


def test_augmented_assignment_to_a_fresh_sum_still_merges():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1), bn(3)

        def forward(self, x):
            out = self.a(x)
            out += self.b(x)
            out *= 2.0
            out -= self.c(x)
            return out

    model = prepare(Block())
    fused = repfuse.fuse(model)
    assert ops(fused)["conv"] == 1 and len(fused.graph.nodes) == 3
    outputs_match(model, fused)


class WriteBetween(nn.Module):
    """A write into the root after the conv read it and before the BatchNorm that would fold into it."""

    def __init__(self, write):
        super().__init__()
        self.first = nn.Conv2d(3, 3, 3, padding=1)
        self.second = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = bn(3)
        self.act = nn.ReLU(inplace=True)
        self.write = write

    def forward(self, x):
        a = self.first(x)
        y = self.second(a)
        if self.write == "method":
            a.add_(1)
        elif self.write == "operator":
            a += 1
        elif self.write == "functional":
            F.relu(a, inplace=True)
        elif self.write == "module":
            self.act(a)
        elif self.write == "setitem":
            a[:, 0] = 0
        elif self.write == "view":
            a.view(-1).mul_(2)  # a view of ``a``: the same memory
        return self.bn(y), a


def test_a_write_between_ops_keeps_them_apart():
    for write in ("method", "operator", "functional", "module", "setitem", "view"):
        model = prepare(WriteBetween(write))
        fused, report = repfuse.fuse(model, return_report=True)
        assert ops(fused)["bn"] == 1, write
        assert "between these ops, which read `first` before it" in reasons(report), write
        outputs_match(model, fused)


class WriteElsewhere(nn.Module):
    """Branches on ``x`` with an in-place ReLU of another tensor between them: they still merge."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), bn(3))
        self.other = nn.Conv2d(3, 3, 1)
        self.b = nn.Sequential(nn.Conv2d(3, 3, 1), bn(3))

    def forward(self, x):
        a = self.a(x)
        other = torch.relu_(self.other(x))
        b = self.b(x)
        return a + b, other


def test_a_write_into_another_tensor_does_not_stop_merging():
    model = prepare(WriteElsewhere())
    fused = repfuse.fuse(model)
    assert ops(fused) == {"conv": 2, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 1}  # other: the relu_
    outputs_match(model, fused)


class CopyThenWrite(nn.Module):
    """``x * 1`` is a copy of ``x``: dropping it would let the write reach ``x``, which the conv reads."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = x * 1.0
        y.add_(1)
        return y, self.conv(x)


def test_a_copy_that_is_written_into_is_kept():
    model = prepare(CopyThenWrite())
    fused, report = repfuse.fuse(model, return_report=True)
    assert "which would then be `x` itself" in reasons(report)
    assert report.merges == []
    outputs_match(model, fused)


class CopyThenWriteInput(nn.Module):
    def forward(self, x):
        y = x * 1.0
        x.sub_(1)  # the caller's input, written after the copy was taken
        return y


def test_a_copy_of_a_tensor_written_later_is_kept():
    model = CopyThenWriteInput()
    fused = repfuse.fuse(model)
    outputs_match(model, fused)


class Zeroing(nn.Module):
    """A module of the model's own, kept whole, that writes into its input."""

    def forward(self, x):
        return x.zero_()


class UnknownBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.zeroing = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1), Zeroing()

    def forward(self, x):
        a = self.a(x)
        z = self.zeroing(x)
        return a + self.b(x), z


def test_a_module_repfuse_does_not_know_may_write_into_its_input():
    model = prepare(UnknownBetween())
    fused, report = repfuse.fuse(model, return_report=True, leaf_modules=[Zeroing])
    assert "`zeroing` writes into `x`" in reasons(report)
    assert ops(fused)["conv"] == 2
    outputs_match(model, fused)


def test_without_writes_nothing_changes():
    """The same block without the write merges as usual."""
    model = prepare(WriteBetween("none"))
    fused = repfuse.fuse(model)
    assert ops(fused)["bn"] == 0
    outputs_match(model, fused)


class ScaleWrittenInPlace(nn.Module):
    """A factor computed from a parameter, then written into: it is not the constant it was."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(1, 3, 1, 1) + 0.5)

    def forward(self, x):
        scale = self.gamma.clone()
        scale.mul_(2)
        return self.conv(x) * scale


def test_a_constant_written_into_is_not_folded():
    model = prepare(ScaleWrittenInPlace())
    fused, report = repfuse.fuse(model, return_report=True)
    assert report.merges == []
    outputs_match(model, fused)
