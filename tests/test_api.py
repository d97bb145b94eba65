"""``repfuse.fuse`` as a user calls it: copies, errors, verification, reports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repfuse

from .helpers import F64, assert_equivalent, assert_unchanged, bn, ops, prepare, snapshot
from .test_branches import RepVGGBlock, Stacked


def test_the_input_model_is_left_unchanged():
    model = prepare(Stacked())
    before = snapshot(model)
    modules = dict(model.named_modules())
    repfuse.fuse(model, torch.randn(1, 4, 8, 8, dtype=F64), verify=True)
    assert_unchanged(model, before)
    assert dict(model.named_modules()) == modules
    assert all(not m.training for m in model.modules())


def test_the_fused_model_shares_no_storage_with_the_input():
    model = prepare(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), bn(4)))
    fused = repfuse.fuse(model)
    original = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    new = {t.untyped_storage().data_ptr() for t in list(fused.parameters()) + list(fused.buffers())}
    assert not original & new
    with torch.no_grad():
        for p in fused.parameters():
            p.zero_()
    assert all(p.abs().sum() > 0 for p in model.parameters())


def test_the_fused_model_shares_no_module_with_the_input():
    relu = nn.ReLU(inplace=True)
    relu.threshold_note = (0.5, "kept")  # a plain attribute the copy keeps
    model = prepare(nn.Sequential(nn.Conv2d(3, 4, 3), bn(4), relu, nn.Flatten(), nn.Linear(4 * 4 * 4, 2)))
    fused = repfuse.fuse(model)
    assert not {id(m) for m in model.modules()} & {id(m) for m in fused.modules()}
    (copied,) = [m for m in fused.modules() if isinstance(m, nn.ReLU)]
    assert copied.inplace and copied.threshold_note == (0.5, "kept")
    copied.register_forward_hook(lambda *args: None)  # the copy's hooks are its own
    assert not relu._forward_hooks
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    assert_equivalent(model, fused, x)


def test_fusing_a_fused_model_changes_nothing():
    model = prepare(Stacked())
    once = repfuse.fuse(model)
    twice, report = repfuse.fuse(once, return_report=True)
    ops = lambda gm: [(n.op, n.target, len(n.args)) for n in gm.graph.nodes]  # noqa: E731 (names may differ)
    assert ops(twice) == ops(once)
    assert report.merges == []
    assert report.before == report.after
    state_once, state_twice = once.state_dict(), twice.state_dict()
    assert state_once.keys() == state_twice.keys()
    assert all(torch.equal(state_once[k], state_twice[k]) for k in state_once)


def test_a_batch_norm_in_training_mode_is_an_error_naming_the_fix():
    model = RepVGGBlock(4)
    with pytest.raises(repfuse.TrainingModeError, match=r"model\.eval\(\)"):
        repfuse.fuse(model)


def test_not_a_module_is_an_error():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        repfuse.fuse(lambda x: x)


def test_verify_needs_example_inputs():
    with pytest.raises(ValueError, match="example_inputs"):
        repfuse.fuse(prepare(RepVGGBlock(4)), verify=True)


def test_example_inputs_that_do_not_fit_are_an_error():
    with pytest.raises(ValueError, match="do not fit"):
        repfuse.fuse(prepare(RepVGGBlock(4)), torch.randn(1, 3, 8, 8, dtype=F64))


def test_verification_catches_a_different_model():
    model = prepare(RepVGGBlock(4))
    other = prepare(RepVGGBlock(4))
    x = torch.randn(1, 4, 6, 6, dtype=F64)
    with pytest.raises(repfuse.VerificationError, match="tolerance"):
        repfuse.check_equivalence(model, other, (x,))
    assert repfuse.check_equivalence(model, repfuse.fuse(model), (x,)) < 1e-10


def test_float32_model_is_fused_in_float64_and_cast_back():
    model = prepare(RepVGGBlock(16)).float()
    x = torch.randn(2, 16, 10, 10)
    fused = repfuse.fuse(model, x, verify=True)
    assert {p.dtype for p in fused.parameters()} == {torch.float32}
    reference = model.double()(x.double())
    assert repfuse.relative_error(fused(x).double(), reference) < 1e-5


def test_report_lists_merges_refusals_and_counts():
    model = prepare(Stacked())
    report = repfuse.explain(model)
    assert report.before.convs == 4 and report.after.convs == 2
    assert report.before.batch_norms == 5 and report.after.batch_norms == 0
    assert report.before.adds == 3 and report.after.adds == 0
    assert report.after.parameters < report.before.parameters
    merge = next(m for m in report.merges if m.module == "one.fused")
    assert merge.members == (
        "one.dense.0 (Conv2d)",
        "one.dense.1 (BatchNorm2d)",
        "one.pointwise.0 (Conv2d)",
        "one.pointwise.1 (BatchNorm2d)",
        "add (operator.add)",
        "one.identity (BatchNorm2d)",
        "add_1 (operator.add)",
    )
    assert merge.result == "Conv2d 4->4 k3x3 s1x1 p1x1"
    text = str(report)
    assert "one.fused <- one.dense.0 (Conv2d)" in text
    assert "batch_norms" in text
    assert report.to_dict()["after"]["convs"] == 2


def test_a_lone_conv_is_left_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).to(F64)
    fused, report = repfuse.fuse(model, return_report=True)
    assert report.merges == []
    assert torch.equal(fused.get_submodule("0").weight, model[0].weight)


def test_identity_modules_are_removed():
    model = nn.Sequential(nn.Identity(), nn.ReLU(), nn.Identity(), nn.Dropout()).eval()
    fused = repfuse.fuse(model)
    assert ops(fused)["other"] == 1
    x = torch.randn(3, 4)
    assert torch.equal(fused(x), model(x))


def test_names_of_new_modules_come_from_the_modules_they_replace():
    model = prepare(Stacked())
    fused = repfuse.fuse(model)
    assert sorted(fused.state_dict()) == ["one.fused.bias", "one.fused.weight", "two.fused.bias", "two.fused.weight"]
    assert_equivalent(model, fused, torch.randn(1, 4, 8, 8, dtype=F64))


class Recording(nn.Module):
    """A forward that stores something on the module while it runs (here, while traced)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = bn(4)

    def forward(self, x):
        self.last_input = x
        return self.bn(self.conv(x))


def test_attributes_set_while_tracing_do_not_stay_on_the_callers_model():
    model = prepare(Recording())
    before = snapshot(model)
    fused = repfuse.fuse(model)
    assert not hasattr(model, "last_input")
    assert_unchanged(model, before)
    assert_equivalent(model, fused, torch.randn(1, 3, 5, 5, dtype=F64))


class Gated(nn.Module):
    """Untraceable, with a weight and a scale the parent's own graph reads."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4, 3, 3))
        self.gamma = nn.Parameter(torch.rand(4) + 0.5)
        self.inner = nn.Sequential(nn.Conv2d(4, 4, 1), bn(4))

    def forward(self, x):
        return self.inner(x) if x.sum() > 0 else -x


class ReadsIntoUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Gated()

    def forward(self, x):
        y = torch.nn.functional.conv2d(x, self.block.weight, padding=1) * self.block.gamma.view(1, -1, 1, 1)
        return self.block(y)


def test_parameters_of_an_untraceable_module_read_by_the_graph_stay_tied_to_it():
    model = prepare(ReadsIntoUntraceable())
    before = snapshot(model)
    children = dict(model.block.named_children())
    fused, report = repfuse.fuse(model, return_report=True)
    assert [m.module for m in report.merges] == ["block.inner.0"]
    assert "`block.weight` is shared" in report.refusals_of("conv2d")[0]
    assert dict(model.block.named_children()) == children
    assert_unchanged(model, before)
    x = torch.randn(1, 4, 5, 5, dtype=F64)
    assert_equivalent(model, fused, x)
