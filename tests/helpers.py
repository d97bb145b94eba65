"""Shared test tools: realistic BatchNorm statistics, op counts and float64 checks."""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

import repfuse

F64 = torch.float64
EXACT = 1e-10  # float64 relative error above this is a bug, not rounding


def randomize_batch_norms(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (not 0/1)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            n = module.num_features
            with torch.no_grad():
                if module.running_mean is not None:
                    module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
                    module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
                if module.weight is not None:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(n, generator=generator) * 2 - 1)
    return model


def bn(features: int, dims: int = 2, **kwargs) -> nn.Module:
    """A BatchNorm with realistic random statistics."""
    module = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](features, **kwargs)
    return randomize_batch_norms(module)


def prepare(model: nn.Module) -> nn.Module:
    """Realistic statistics, eval mode, float64."""
    return randomize_batch_norms(model).eval().to(F64)


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return repfuse.relative_error(actual, expected)


def assert_equivalent(model: nn.Module, fused: nn.Module, *inputs, tol: float = EXACT) -> float:
    with torch.no_grad():
        expected = model(*inputs)
        actual = fused(*inputs)
    assert actual.shape == expected.shape
    error = rel_error(actual, expected)
    assert error < tol, f"relative error {error:.3g} >= {tol:g}"
    return error


def snapshot(model: nn.Module) -> tuple[dict, str]:
    """The model's state (copied) and module tree, to check it is left unchanged."""
    return copy.deepcopy(model.state_dict()), repr(model)


def assert_unchanged(model: nn.Module, before: tuple[dict, str]) -> None:
    state, tree = before
    assert repr(model) == tree
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(now[key], value), key


_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}


def ops(gm) -> dict[str, int]:
    """How many convs, linears, BatchNorms, adds and calls of other kinds ``gm`` runs."""
    counts = {"conv": 0, "linear": 0, "bn": 0, "add": 0, "pad": 0, "other": 0}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            kind = (
                "conv"
                if isinstance(module, _ConvNd)
                else "linear"
                if isinstance(module, nn.Linear)
                else "bn"
                if isinstance(module, _BatchNorm)
                else "other"
            )
        elif node.op in ("call_function", "call_method"):
            target = node.target
            if target in _ADDS:
                kind = "add"
            elif target in (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
                kind = "conv"
            elif target is F.batch_norm:
                kind = "bn"
            elif target is F.linear:
                kind = "linear"
            elif target is F.pad:
                kind = "pad"
            else:
                kind = "other"
        else:
            continue
        counts[kind] += 1
    return counts


def fuse_and_check(model: nn.Module, x: torch.Tensor, expected: dict[str, int], reason: str | None = None, **kwargs):
    """Fuse ``model``; assert what is left (``expected`` counts), equivalence in float64 and ``reason`` in the report."""
    fused, report = repfuse.fuse(model, return_report=True, **kwargs)
    counts = ops(fused)
    assert {key: counts[key] for key in expected} == expected, counts
    assert_equivalent(model, fused, x)
    reasons = " | ".join(r.reason for r in report.refusals)
    if reason is None:
        assert not any(r.reason.startswith("the cost policy") for r in report.refusals), reasons
    else:
        assert reason in reasons, reasons
    return fused, report
