"""Maps in sequence (composition), and the cost policy that decides which merges pay off."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repfuse

from .helpers import F64, bn, fuse_and_check, ops, prepare


def chain(*layers) -> nn.Module:
    return prepare(nn.Sequential(*layers))


def test_1x1_then_3x3_with_zero_padding_is_not_merged():
    model = chain(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, padding=1))
    fuse_and_check(model, torch.randn(2, 4, 6, 6, dtype=F64), {"conv": 2}, reason="zero padding after a biased op")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_1x1_then_3x3_with_another_padding_mode_merges(mode):
    model = chain(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, padding=1, padding_mode=mode))
    fused, _ = fuse_and_check(model, torch.randn(2, 4, 6, 6, dtype=F64), {"conv": 1})
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.padding_mode == mode and conv.in_channels == 4


def test_1x1_then_unpadded_3x3_merges():
    model = chain(nn.Conv2d(4, 8, 1), bn(8), nn.Conv2d(8, 8, 3), bn(8))
    fuse_and_check(model, torch.randn(2, 4, 6, 6, dtype=F64), {"conv": 1, "bn": 0})


def test_unbiased_1x1_then_zero_padded_3x3_merges():
    model = chain(nn.Conv2d(4, 8, 1, bias=False), nn.Conv2d(8, 8, 3, padding=1))
    fuse_and_check(model, torch.randn(2, 4, 6, 6, dtype=F64), {"conv": 1})


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_kxk_then_strided_1x1_merges(stride):
    model = chain(nn.Conv2d(8, 8, 3, padding=1), bn(8), nn.Conv2d(8, 4, 1, stride=stride), bn(4))
    fused, _ = fuse_and_check(model, torch.randn(2, 8, 7, 8, dtype=F64), {"conv": 1, "bn": 0})
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.stride == (stride, stride) and conv.kernel_size == (3, 3)


def test_strided_kxk_then_unpadded_kxk_merges_when_allowed():
    model = chain(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3))
    x = torch.randn(2, 4, 11, 11, dtype=F64)
    fuse_and_check(model, x, {"conv": 2}, reason="the cost policy keeps it apart")
    fused, _ = fuse_and_check(model, x, {"conv": 1}, policy="maximal")
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2)


def test_two_3x3_convs_stay_two_under_the_cost_policy():
    model = chain(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))
    _, report = fuse_and_check(model, torch.randn(2, 8, 9, 9, dtype=F64), {"conv": 2}, reason="Conv2d 8->8 k5x5")
    assert report.merges == []


class BNThenConv(nn.Module):
    def __init__(self, padding, mode="zeros"):
        super().__init__()
        self.bn = bn(4)
        self.conv = nn.Conv2d(4, 8, 3, padding=padding, padding_mode=mode)

    def forward(self, x):
        return self.conv(self.bn(torch.relu(x)))


@pytest.mark.parametrize("padding,mode", [(0, "zeros"), (1, "reflect"), (1, "replicate")])
def test_batch_norm_then_conv_merges_without_zero_padding(padding, mode):
    model = prepare(BNThenConv(padding, mode))
    fuse_and_check(model, torch.randn(2, 4, 6, 6, dtype=F64), {"conv": 1, "bn": 0})


def test_batch_norm_then_zero_padded_conv_is_not_merged():
    model = prepare(BNThenConv(1))
    fuse_and_check(model, torch.randn(2, 4, 6, 6, dtype=F64), {"conv": 1, "bn": 1}, reason="zero padding")


def test_linear_chains_merge():
    model = chain(nn.Linear(6, 16), nn.Dropout(0.1), nn.Linear(16, 8), nn.Linear(8, 3))
    fuse_and_check(model, torch.randn(5, 6, dtype=F64), {"linear": 1, "other": 0})


def test_bottleneck_linear_chain_stays_under_the_cost_policy():
    # 64 -> 2 -> 64 costs 256 MACs; one 64 -> 64 layer would cost 4096.
    model = chain(nn.Linear(64, 2), nn.Linear(2, 64))
    fuse_and_check(model, torch.randn(5, 64, dtype=F64), {"linear": 2}, reason="cost policy")
    fuse_and_check(model, torch.randn(5, 64, dtype=F64), {"linear": 1}, policy="maximal")


def test_chain_of_pointwise_and_depthwise_convs():
    model = chain(
        nn.Conv2d(8, 8, 1, bias=False), bn(8), nn.Conv2d(8, 8, 3, groups=8), bn(8), nn.Conv2d(8, 8, 1), bn(8)
    )
    fuse_and_check(model, torch.randn(2, 8, 7, 7, dtype=F64), {"conv": 1, "bn": 0}, policy="maximal")


def test_conv3d_and_conv1d_sequences():
    fuse_and_check(
        chain(nn.Conv3d(2, 4, 1), nn.Conv3d(4, 4, 3), bn(4, 3)),
        torch.randn(2, 2, 5, 5, 5, dtype=F64),
        {"conv": 1, "bn": 0},
    )
    fuse_and_check(
        chain(nn.Conv1d(2, 4, 3, dilation=2), nn.Conv1d(4, 4, 1, stride=2), bn(4, 1)),
        torch.randn(2, 2, 11, dtype=F64),
        {"conv": 1, "bn": 0},
    )


# -- groups and the cost policy -------------------------------------------------------------
class DepthwisePlusDense(nn.Module):
    def __init__(self):
        super().__init__()
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), bn(16))
        self.dense = nn.Sequential(nn.Conv2d(16, 16, 1), bn(16))

    def forward(self, x):
        return self.depthwise(x) + self.dense(x)


def test_depthwise_plus_dense_branches_stay_apart_under_the_cost_policy():
    model = prepare(DepthwisePlusDense())
    x = torch.randn(2, 16, 6, 6, dtype=F64)
    _, report = fuse_and_check(model, x, {"conv": 2, "bn": 0, "add": 1}, reason="the cost policy keeps it apart")
    assert sorted(len(m.members) for m in report.merges) == [2, 2]


def test_depthwise_plus_dense_branches_merge_under_the_maximal_policy():
    model = prepare(DepthwisePlusDense())
    fused, _ = fuse_and_check(model, torch.randn(2, 16, 6, 6, dtype=F64), {"conv": 1, "add": 0}, policy="maximal")
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.groups == 1


class TwoDensePlusDepthwise(nn.Module):
    """``(a + b) + c``: the cost policy rejects the whole sum but not ``a + b``."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(64, 64, 1), bn(64))
        self.b = nn.Sequential(nn.Conv2d(64, 64, 1, bias=False), bn(64))
        self.c = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64), bn(64))

    def forward(self, x):
        return self.a(x) + self.b(x) + self.c(x)


def test_a_rejected_sum_still_merges_its_first_two_branches():
    model = prepare(TwoDensePlusDepthwise())
    x = torch.randn(2, 64, 5, 5, dtype=F64)
    fused, report = fuse_and_check(model, x, {"conv": 2, "bn": 0, "add": 1}, reason="the cost policy keeps it apart")
    kernels = sorted(m.kernel_size for m in fused.modules() if isinstance(m, nn.Conv2d))
    assert kernels == [(1, 1), (3, 3)]
    assert sorted(len(m.members) for m in report.merges) == [2, 5]  # c with its BN; a, b, their BNs and the add


def test_a_custom_cost_policy():
    model = prepare(DepthwisePlusDense())
    generous = repfuse.CostPolicy(traffic_weight=8.0, margin=10.0)
    fused = repfuse.fuse(model, policy=generous)
    assert ops(fused)["conv"] == 1


def test_an_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="policy"):
        repfuse.fuse(nn.Conv2d(1, 1, 1), policy="fastest")


class GroupedIdentity(nn.Module):
    """A grouped 3x3 branch plus the input: the identity kernel is W[o, o mod (C/g)] = 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1, groups=3)

    def forward(self, x):
        return self.conv(x) + x


def test_identity_branch_under_groups():
    model = GroupedIdentity().to(F64)
    fused, _ = fuse_and_check(model, torch.randn(2, 6, 5, 5, dtype=F64), {"conv": 1, "add": 0})
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.groups == 3
    centre = (conv.weight - model.conv.weight)[:, :, 1, 1]
    expected = torch.zeros(6, 2, dtype=F64)
    for o in range(6):
        expected[o, o % 2] = 1
    assert torch.allclose(centre, expected)
