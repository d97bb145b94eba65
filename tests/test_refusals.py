"""Where a merge is not exact: the graph keeps the op and the report says why."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import repfuse

from .helpers import F64, assert_equivalent, bn, ops, prepare


def _reasons(report) -> str:
    return " | ".join(f"{r.op}: {r.reason}" for r in report.refusals)


class SharedConv(nn.Module):
    """One conv module called twice, a BatchNorm after only one call."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = bn(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + torch.relu(self.conv(x))


def test_conv_called_at_two_sites_keeps_its_batch_norm():
    model = prepare(SharedConv())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 2 and ops(fused)["bn"] == 1
    assert fused.conv is fused.get_submodule("conv")
    assert "called at 2 places" in _reasons(report)
    assert_equivalent(model, fused, torch.randn(2, 4, 6, 6, dtype=F64))


class SharedWeight(nn.Module):
    """One weight tensor read by two ``F.conv2d`` calls."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4, 3, 3))
        self.bn = bn(4)

    def forward(self, x):
        return self.bn(F.conv2d(x, self.weight, padding=1)) * F.conv2d(x, self.weight, padding=1)


def test_weight_read_by_two_functional_convs_stays_tied():
    model = prepare(SharedWeight())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["bn"] == 1
    assert "shared" in _reasons(report)
    assert_equivalent(model, fused, torch.randn(2, 4, 6, 6, dtype=F64))


class ConvWithTwoReaders(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = bn(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + torch.sigmoid(y)


def test_conv_output_read_by_batch_norm_and_another_op_is_not_folded():
    model = prepare(ConvWithTwoReaders())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 1
    assert "`sigmoid`" in " ".join(report.refusals_of("conv"))
    assert_equivalent(model, fused, torch.randn(2, 3, 6, 6, dtype=F64))


class BatchStatistics(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_batch_norm_without_running_statistics_is_not_folded():
    model = prepare(BatchStatistics())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["bn"] == 1
    assert any("running statistics" in r for r in report.refusals_of("bn"))
    assert_equivalent(model, fused, torch.randn(4, 3, 6, 6, dtype=F64))


class FunctionalTrainingBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x):
        return F.batch_norm(self.conv(x), self.mean.clone(), self.var.clone(), training=True)


def test_functional_batch_norm_in_training_mode_is_not_folded():
    model = FunctionalTrainingBN().eval().to(F64)
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["bn"] == 1
    assert "training=True" in _reasons(report)


class LinearBN3d(nn.Module):
    """Linear on (N, L, C) then BatchNorm1d, which normalises L, not C (sizes match)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.bn = bn(5, 1)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_linear_bn1d_on_3d_input_is_not_folded_even_when_sizes_match():
    model = prepare(LinearBN3d())
    x = torch.randn(2, 5, 5, dtype=F64)
    fused, report = repfuse.fuse(model, x, return_report=True)
    assert ops(fused)["bn"] == 1 and ops(fused)["linear"] == 1
    assert any("on dim 2" in r for r in report.refusals_of("bn"))
    assert_equivalent(model, fused, x)


def test_linear_bn1d_of_unknown_rank_is_not_folded():
    model = prepare(LinearBN3d())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["bn"] == 1
    assert any("pass example_inputs" in r for r in report.refusals_of("bn"))


class DifferentStrides(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), bn(4))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 1, 1, 0), bn(4))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.a(x) + self.pool(self.b(x))


def test_branches_on_different_roots_are_not_merged():
    model = prepare(DifferentStrides())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 2 and ops(fused)["bn"] == 0 and ops(fused)["add"] == 1
    assert "different tensors" in " ".join(report.refusals_of("add"))
    assert_equivalent(model, fused, torch.randn(2, 4, 8, 8, dtype=F64))


class StrideAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), bn(4))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 2, 1, 0, dilation=5), bn(4))

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_branches_with_different_strides_are_not_merged():
    model = prepare(StrideAdd())
    x = torch.randn(2, 4, 10, 10, dtype=F64)  # both branches give 5x5 here
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 2 and ops(fused)["bn"] == 0 and ops(fused)["add"] == 1
    assert "different strides" in " ".join(report.refusals_of("add"))
    assert_equivalent(model, fused, x)


class ReflectPlusZeros(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_reflect_and_zero_padded_branches_are_not_merged():
    model = ReflectPlusZeros().to(F64)
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 2 and ops(fused)["add"] == 1
    assert "pad their input differently" in " ".join(report.refusals_of("add"))
    assert_equivalent(model, fused, torch.randn(2, 4, 6, 6, dtype=F64))


class Hooked(nn.Module):
    def __init__(self, seen: list):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = bn(4)
        self.conv.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))

    def forward(self, x):
        return self.bn(self.conv(x))


def test_a_module_with_hooks_is_not_merged_and_its_hooks_still_run():
    seen = []
    model = prepare(Hooked(seen))
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["conv"] == 1 and ops(fused)["bn"] == 1
    assert "hooks" in _reasons(report)
    fused(torch.randn(1, 3, 5, 5, dtype=F64))
    assert seen == [torch.Size([1, 4, 3, 3])]


class TrainingDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout(0.5)
        self.bn = bn(4)

    def forward(self, x):
        return self.bn(self.drop(self.conv(x)))


def test_dropout_in_training_mode_is_not_treated_as_identity():
    model = prepare(TrainingDropout())
    model.drop.train()
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["bn"] == 1
    assert "random" in _reasons(report)


class ShapeArithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        n = x.size(0) + 0
        return self.conv(x).view(n + 1 - 1, -1)


def test_shape_arithmetic_is_neither_merged_nor_reported():
    model = ShapeArithmetic().to(F64)
    fused, report = repfuse.fuse(model, return_report=True)
    assert report.refusals == []
    assert_equivalent(model, fused, torch.randn(2, 3, 5, 5, dtype=F64))
