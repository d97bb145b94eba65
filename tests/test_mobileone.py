"""MobileOne S0-S4: repfuse's fused model against the hand-written deploy form."""

from __future__ import annotations

import pytest
import torch

import repfuse
from benchmarks.reference import deploy_mobileone
from repfuse.models import calibrate_batch_norms, mobileone

from .helpers import F64, EXACT, ops

VARIANTS = ["s0", "s1", "s2", "s3", "s4"]

# Float32 at 224x224, relative to max|output| of the float64 train-time model, with
# BatchNorm statistics calibrated at that resolution.  Float32 rounds each product to
# ~6e-8; through ~60 layers, reductions of up to thousands of terms and a sigmoid gate
# (S4), errors of 3e-6 .. 2.5e-5 are observed for the fused model, the hand-written
# deploy form and the unfused float32 model alike.
FLOAT32_TOLERANCE = 1e-4


@pytest.fixture(params=VARIANTS)
def variant(request):
    return request.param


def _traced_ops(model):
    return ops(repfuse.trace.trace(model).module())


def test_fused_mobileone_has_the_deploy_structure_and_matches_in_float64(variant):
    model = calibrate_batch_norms(mobileone(variant, num_classes=10), (16, 3, 64, 64), seed=1).double()
    deploy = deploy_mobileone(model)
    x = torch.randn(2, 3, 64, 64, dtype=F64)
    fused = repfuse.fuse(model)
    with torch.no_grad():
        expected, reference, actual = model(x), deploy(x), fused(x)
    assert repfuse.relative_error(actual, expected) < EXACT
    assert repfuse.relative_error(actual, reference) < EXACT
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in deploy.parameters())
    fused_ops, deploy_ops = ops(fused), _traced_ops(deploy)
    assert fused_ops["conv"] == deploy_ops["conv"]
    assert fused_ops["bn"] == 0 and fused_ops["add"] == 0
    assert fused_ops["linear"] == deploy_ops["linear"]
    assert fused_ops["other"] <= deploy_ops["other"]  # the deploy form keeps its nn.Identity calls


def test_fused_mobileone_in_float32_at_224_is_as_accurate_as_the_deploy_form(variant):
    model = calibrate_batch_norms(mobileone(variant, num_classes=10), (2, 3, 224, 224), seed=2)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.double()(x.double())
        model.float()
        fused = repfuse.fuse(model)
        deploy = deploy_mobileone(model)
        fused_error = repfuse.relative_error(fused(x), reference)
        deploy_error = repfuse.relative_error(deploy(x), reference)
    assert {p.dtype for p in fused.parameters()} == {torch.float32}
    assert fused_error < FLOAT32_TOLERANCE
    assert fused_error <= 2 * deploy_error + 1e-7, (fused_error, deploy_error)


def test_published_parameter_counts_of_the_deploy_form():
    # Deploy-form parameters from the paper's Table 7 (millions, 1000 classes).
    published = {"s0": 2.1, "s1": 4.8, "s2": 7.8, "s3": 10.1, "s4": 14.8}
    for variant, millions in published.items():
        fused = repfuse.fuse(mobileone(variant).eval())
        count = sum(p.numel() for p in fused.parameters()) / 1e6
        assert abs(count - millions) < 0.05, (variant, count)
