"""``repfuse.fuse`` and ``repfuse.explain``: copy, trace, analyse, rewrite, verify, report."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten

from .analysis.policy import CostPolicy, MaximalPolicy, resolve_policy
from .errors import FuseError, TrainingModeError, VerificationError
from .exported import fuse_exported
from .module_pass import Options, collector_paused, fresh_copies, fuse_module
from .report import Report
from .trace import has_global_hooks

#: Largest accepted ``max|fused - original| / max|original|`` per output dtype.
TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"repfuse.fuse takes a torch.nn.Module, got {type(model).__name__}")
    if has_global_hooks():
        raise FuseError(
            "hooks are registered for every module (torch.nn.modules.module.register_module_forward_hook "
            "and the like): fusing would change which modules they see; remove them before repfuse.fuse"
        )
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and module.training and module.track_running_stats:
            raise TrainingModeError(
                f"BatchNorm `{name or type(module).__name__}` is in training mode, where it normalises "
                "with batch statistics and cannot be folded: call model.eval() before repfuse.fuse"
            )


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_inputs(model: nn.Module, inputs: tuple) -> None:
    """Run ``model`` once on ``inputs``; a clear error if they do not fit it."""
    for index, item in enumerate(inputs):
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"example input {index} is a {type(item).__name__}, not a tensor")
    try:
        with torch.no_grad():
            model(*fresh_copies(inputs))
    except Exception as error:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise ValueError(f"example_inputs of shape {shapes} do not fit the model: {error}") from error


def _as_tuple(example_inputs: Any) -> tuple | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    return (example_inputs,)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|`` computed in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    diff = (actual - expected).abs().max().item() if expected.numel() else 0.0
    return diff / scale if scale > 0 else diff


def check_equivalence(original: nn.Module, fused: nn.Module, inputs: tuple) -> float:
    """Run both models on ``inputs``; raise :class:`VerificationError` if they differ.

    Returns the largest relative error over all floating-point outputs.
    """
    with torch.no_grad():
        expected, expected_spec = tree_flatten(original(*fresh_copies(inputs)))
        actual, actual_spec = tree_flatten(fused(*fresh_copies(inputs)))
    if expected_spec != actual_spec:
        raise VerificationError(f"the fused model returns {actual_spec}, the original {expected_spec}")
    worst = 0.0
    for index, (a, e) in enumerate(zip(actual, expected)):
        if not isinstance(e, torch.Tensor):
            if a != e:
                raise VerificationError(f"output {index} is {a!r}, the original's is {e!r}")
            continue
        if a.shape != e.shape or a.dtype != e.dtype:
            raise VerificationError(
                f"output {index} has shape {tuple(a.shape)} {a.dtype}, the original's {tuple(e.shape)} {e.dtype}"
            )
        if not e.is_floating_point():
            if not torch.equal(a, e):
                raise VerificationError(f"output {index} differs from the original's")
            continue
        error = relative_error(a, e)
        tolerance = TOLERANCE.get(e.dtype, 1e-4)
        if not error <= tolerance:
            raise VerificationError(
                f"output {index} differs from the original's by {error:.3g} (relative), "
                f"over the {tolerance:g} tolerance for {e.dtype}"
            )
        worst = max(worst, error)
    return worst


def fuse(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    verify: bool = False,
    return_report: bool = False,
    policy: str | CostPolicy | MaximalPolicy = "cost",
    concrete_args: dict[str, Any] | None = None,
    leaf_modules: Sequence[type | str] = (),
):
    """An equivalent module in which every exact linear region is one convolution.

    ``model`` is an eval-mode ``nn.Module`` (the result is a ``torch.fx.GraphModule``,
    or the model itself with fused children where ``torch.fx`` cannot trace it) or a
    ``torch.export.ExportedProgram`` (the result is a new ``ExportedProgram``).

    ``model`` is not changed.  ``example_inputs`` (a tensor or a tuple of them) give
    the analysis tensor ranks and shapes; with ``verify=True`` both models run on them
    and a :class:`VerificationError` is raised if the outputs differ beyond
    :data:`TOLERANCE`.  ``policy`` decides which exact merges are made: ``"cost"``
    (default: only those that do not make the model slower, see :class:`CostPolicy`),
    ``"maximal"`` (all of them) or a :class:`CostPolicy` with other weights.
    ``concrete_args`` and ``leaf_modules`` (classes or qualified names of submodules
    to keep as they are) go to the ``torch.fx`` tracer.  A model ``torch.fx`` cannot
    trace whole is fused where it can be: its untraceable modules keep their own
    ``forward`` and their children are fused (the report says which and why).  With
    ``return_report=True`` returns ``(fused, report)``.
    """
    options = Options(resolve_policy(policy), concrete_args, tuple(leaf_modules))
    inputs = _as_tuple(example_inputs)
    if isinstance(model, ExportedProgram):
        return _fuse_program(model, inputs, options, verify, return_report)
    _check_model(model)
    if verify and inputs is None:
        raise ValueError("verify=True needs example_inputs to run both models on")
    if inputs is not None:
        _check_inputs(model, inputs)
    with collector_paused():
        fused, report = fuse_module(model, inputs, options)
    report.before = replace(report.before, parameters=_parameter_count(model))
    report.after = replace(report.after, parameters=_parameter_count(fused))
    if verify:
        check_equivalence(model, fused, inputs)
    return (fused, report) if return_report else fused


def _fuse_program(program: ExportedProgram, inputs: tuple | None, options: Options, verify: bool, return_report: bool):
    with collector_paused():
        fused, report = fuse_exported(program, inputs, options)
    report.before = replace(report.before, parameters=_parameter_count(program.module()))
    report.after = replace(report.after, parameters=_parameter_count(fused.module()))
    if verify:
        args = inputs if inputs is not None else tuple(program.example_inputs[0])
        check_equivalence(program.module(), fused.module(), args)
    return (fused, report) if return_report else fused


def explain(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    policy: str | CostPolicy | MaximalPolicy = "cost",
    concrete_args: dict[str, Any] | None = None,
    leaf_modules: Sequence[type | str] = (),
) -> Report:
    """The report of what :func:`fuse` would merge and refuse, without keeping its result."""
    return fuse(
        model, example_inputs, return_report=True, policy=policy, concrete_args=concrete_args, leaf_modules=leaf_modules
    )[1]
