"""The torch.export front end: an ExportedProgram in, a fused ExportedProgram out."""

from __future__ import annotations

import pytest
import torch

import repfuse

from .helpers import F64, EXACT, prepare
from .test_branches import RepVGGBlock, Stacked
from .zoo import InceptionBlock, ResNet, UNetDecoder

aten = torch.ops.aten
BATCH_NORMS = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
CONVS = {aten.conv2d.default, aten.convolution.default, aten.conv_transpose2d.input}


def _targets(program) -> list:
    return [node.target for node in program.graph.nodes if node.op == "call_function"]


@pytest.mark.parametrize(
    "factory,shape",
    [(Stacked, (2, 4, 9, 9)), (ResNet, (2, 3, 16, 16)), (UNetDecoder, (2, 3, 8, 8)), (InceptionBlock, (2, 8, 6, 6))],
    ids=["repvgg", "resnet", "unet", "inception"],
)
@pytest.mark.parametrize("decomposed", [False, True], ids=["training-ir", "decomposed"])
def test_exported_program_is_fused_and_exports_again(factory, shape, decomposed):
    model = prepare(factory())
    x = torch.randn(shape, dtype=F64)
    program = torch.export.export(model, (x,))
    if decomposed:
        program = program.run_decompositions()
    fused, report = repfuse.fuse(program, verify=True, return_report=True)
    assert isinstance(fused, torch.export.ExportedProgram)
    assert not BATCH_NORMS & set(_targets(fused))
    assert report.before.batch_norms > 0 and report.after.batch_norms == 0
    with torch.no_grad():
        assert repfuse.relative_error(fused.module()(x), model(x)) < EXACT
    again = torch.export.export(fused.module(), (x,))
    with torch.no_grad():
        assert repfuse.relative_error(again.module()(x), model(x)) < EXACT


def test_repvgg_blocks_become_one_convolution_each_in_aten():
    model = prepare(Stacked())
    x = torch.randn(2, 4, 9, 9, dtype=F64)
    fused = repfuse.fuse(torch.export.export(model, (x,)))
    targets = _targets(fused)
    assert sum(t in CONVS for t in targets) == 2
    assert aten.add.Tensor not in targets


def test_dynamic_dims_stay_dynamic():
    model = prepare(RepVGGBlock(4))
    x = torch.randn(2, 4, 7, 7, dtype=F64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    fused = repfuse.fuse(program)
    other = torch.randn(5, 4, 7, 7, dtype=F64)
    with torch.no_grad():
        assert repfuse.relative_error(fused.module()(other), model(other)) < EXACT


def test_batch_norm_in_training_mode_is_not_folded_in_aten():
    model = prepare(RepVGGBlock(4))
    model.dense[1].train()
    x = torch.randn(2, 4, 7, 7, dtype=F64)
    program = torch.export.export(model, (x,))
    fused, report = repfuse.fuse(program, return_report=True)
    assert report.after.batch_norms == 2  # the training one, and the skip branch it no longer merges with
    assert any("batch statistics" in r.reason for r in report.refusals)
