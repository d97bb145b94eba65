"""Models nobody wrote for repfuse: fused, equal in float64, their input unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repfuse

from .helpers import F64, EXACT, assert_unchanged, ops, prepare, snapshot
from .zoo import (
    Attention,
    BasicBlock,
    DataDependent,
    Hooked,
    InceptionBlock,
    MobileNetV2,
    ResNet,
    UNetDecoder,
    WithControlFlow,
)

ZOO = {
    "resnet": (ResNet, (2, 3, 16, 16)),
    "mobilenetv2": (MobileNetV2, (2, 3, 16, 16)),
    "inception": (InceptionBlock, (2, 8, 6, 6)),
    "control-flow": (WithControlFlow, (2, 3, 6, 6)),
    "attention": (Attention, (2, 5, 16)),
    "unet-decoder": (UNetDecoder, (2, 3, 8, 8)),
    "hooked": (lambda: Hooked([]), (2, 8, 5, 5)),
}


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("with_inputs", [False, True], ids=["no-inputs", "example-inputs"])
def test_zoo_model_fuses_to_an_equivalent_model(name, with_inputs):
    factory, shape = ZOO[name]
    model = prepare(factory())
    before = snapshot(model)
    x = torch.randn(shape, dtype=F64)
    fused, report = repfuse.fuse(model, x if with_inputs else None, return_report=True)
    with torch.no_grad():
        error = repfuse.relative_error(fused(x), model(x))
    assert error < EXACT
    assert_unchanged(model, before)
    if name != "attention":  # the attention block has no BatchNorm
        assert report.before.batch_norms > 0 and report.after.batch_norms == 0
    assert report.after.parameters <= report.before.parameters


def test_resnet_keeps_its_residual_adds_and_folds_every_batch_norm():
    model = prepare(ResNet())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused) == {"conv": 10, "linear": 1, "bn": 0, "add": 4, "pad": 0, "other": 12}
    assert fused.num_classes == 10


def test_inverted_residual_folds_three_conv_bn_pairs():
    model = prepare(MobileNetV2())
    fused, report = repfuse.fuse(model, return_report=True)
    assert ops(fused)["bn"] == 0 and ops(fused)["conv"] == 10


def test_a_data_dependent_submodule_is_kept_and_its_children_fused():
    model = prepare(WithControlFlow())
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    fused, report = repfuse.fuse(model, x, verify=True, return_report=True)
    assert [k.module for k in report.kept] == ["block"]
    assert "control flow" in report.kept[0].reason
    assert isinstance(fused.block, DataDependent)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    for sign in (1, -1):  # both branches of the control flow
        assert repfuse.relative_error(fused(sign * x), model(sign * x)) < EXACT


def test_an_untraceable_model_is_fused_child_by_child():
    model = prepare(DataDependent())
    x = torch.randn(2, 8, 5, 5, dtype=F64)
    fused, report = repfuse.fuse(model, x, verify=True, return_report=True)
    assert report.kept[0].module == "" and "could not trace DataDependent" in report.kept[0].reason
    assert sorted(m.module for m in report.merges) == ["a.0", "b.0"]
    assert fused is not model and isinstance(fused, DataDependent)


def test_leaf_modules_are_kept_as_they_are():
    model = prepare(ResNet())
    fused, report = repfuse.fuse(model, leaf_modules=["layer1.0"], return_report=True)
    assert isinstance(fused.get_submodule("layer1.0"), type(model.layer1[0]))
    assert any(isinstance(m, nn.BatchNorm2d) for m in fused.get_submodule("layer1.0").modules())
    assert ["layer1.0"] == [k.module for k in report.kept]
    by_type = repfuse.fuse(model, leaf_modules=[BasicBlock])
    assert sum(isinstance(m, nn.BatchNorm2d) for m in by_type.modules()) == 9  # all but the stem's


class Configurable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x, scale: bool = True):
        y = self.bn(self.conv(x))
        if scale:
            y = y * 2
        return y


def test_concrete_args_fix_a_flag_for_tracing():
    model = prepare(Configurable())
    fused = repfuse.fuse(model, concrete_args={"scale": True})
    x = torch.randn(1, 3, 5, 5, dtype=F64)
    assert ops(fused)["bn"] == 0
    assert repfuse.relative_error(fused(x), model(x)) < EXACT


def test_hooks_of_a_fused_block_still_run():
    log = []
    model = prepare(Hooked(log))
    x = torch.randn(2, 8, 5, 5, dtype=F64)
    fused, report = repfuse.fuse(model, return_report=True)
    assert any(k.module == "block" and "hooks" in k.reason for k in report.kept)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    log.clear()
    with torch.no_grad():
        assert repfuse.relative_error(fused(x), model(x)) < EXACT
    assert log == [("pre", (2, 8, 5, 5)), ("post", (2, 8, 5, 5))] * 2


def test_hooks_registered_for_every_module_are_an_error():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None)
    try:
        with pytest.raises(repfuse.FuseError, match="every module"):
            repfuse.fuse(prepare(ResNet()))
    finally:
        handle.remove()
