"""The pass over one module: trace, analyse, rewrite; where it cannot trace, its children.

A module ``torch.fx`` cannot trace (data-dependent control flow, unsupported Python)
is kept with its own ``forward``, and each of its children is fused on its own: the
largest traceable submodules are fused.  A module with hooks is traced on its own
and its hooks are moved to the result, so that they run where they ran.
Where example inputs are given, each child's inputs are recorded by running its
parent once, so that its shapes are known too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.fx import GraphModule
from torch.fx.passes.shape_prop import ShapeProp

from .analysis import analyze
from .analysis.policy import CostPolicy, MaximalPolicy
from .describe import describe
from .errors import TraceError
from .report import KeptModule, RefusalRecord, Report, count
from .rewrite import rewrite
from .rules import REGISTRY
from .trace import move_hooks, trace


@dataclass(frozen=True)
class Options:
    """What the caller asked for: the policy, tracing arguments, the model's inputs."""

    policy: CostPolicy | MaximalPolicy
    concrete_args: dict[str, Any] | None = None
    leaf_modules: Sequence[type | str] = ()


def propagate_shapes(gm: GraphModule, inputs: tuple) -> None:
    """Record every node's shape in ``gm`` by running it on ``inputs``."""
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as error:
        raise ValueError(f"example_inputs do not fit the model: {error}") from error


def fuse_module(module: nn.Module, inputs: tuple | None, options: Options, path: str = "") -> tuple[nn.Module, Report]:
    """``module`` (at ``path`` in the model) fused where it can be traced, and what was done.

    ``module`` must be the caller's own copy: children of a module that cannot be traced
    are replaced in it.  The result is a new ``GraphModule``, or ``module`` itself.
    """
    if _is_requested_leaf(module, path, options):
        return module, Report(kept=[KeptModule("", "a leaf module by request: kept as it is")])
    if REGISTRY.is_leaf(module):
        return module, Report()  # one op: nothing to merge it with here
    try:
        gm, kept = trace(module, options.concrete_args if not path else None, _relative(options.leaf_modules, path))
    except TraceError as error:
        report = Report(kept=[KeptModule("", f"{error}: kept as it is, its children fused")])
        return _fuse_children(module, inputs, options, report, path)
    if inputs is not None and not options.concrete_args:
        propagate_shapes(gm, inputs)
    before = count(gm)
    analysis = analyze(gm, policy=options.policy)
    refusals = [RefusalRecord(describe(r.node, gm), r.reason) for r in analysis.refusals]
    merges = rewrite(gm, analysis)
    report = Report(before, count(gm), merges, refusals)
    report.kept += [KeptModule(name, reason) for name, reason in kept.items()]
    whole = [name for name, reason in kept.items() if "its children fused" in reason and _exists(gm, name)]
    if whole:
        _fuse_submodules(gm, whole, inputs, options, report, path, whole=True)
    hooked = [name for name, reason in kept.items() if "hooks" in reason and _exists(gm, name)]
    if hooked:
        _fuse_submodules(gm, hooked, inputs, options, report, path)
    keep_plain_attributes(module, gm)
    move_hooks(module, gm)
    return gm, report


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_requested_leaf(module: nn.Module, path: str, options: Options) -> bool:
    types = tuple(m for m in options.leaf_modules if isinstance(m, type))
    return bool(path) and (isinstance(module, types) or path in options.leaf_modules)


def _relative(leaf_modules: Sequence[type | str], path: str) -> list[type | str]:
    """``leaf_modules`` with names made relative to the submodule at ``path``."""
    prefix = f"{path}." if path else ""
    return [m if isinstance(m, type) else m[len(prefix) :] for m in leaf_modules if isinstance(m, type) or m.startswith(prefix)]


def _fuse_children(module: nn.Module, inputs: tuple | None, options: Options, report: Report, path: str):
    names = [name for name, _ in module.named_children()]
    _fuse_submodules(module, names, inputs, options, report, path)
    return module, report


def _fuse_submodules(
    parent: nn.Module, names: list[str], inputs, options: Options, report: Report, path: str, whole: bool = False
) -> None:
    """Fuse each named submodule of ``parent`` on its own and put the result in its place.

    With ``whole``, the submodules are kept (the caller has said why) and their children fused.
    """
    children = {name: parent.get_submodule(name) for name in names}
    recorded = _record_inputs(parent, inputs, children) if inputs is not None else {}
    for name, child in children.items():
        if whole:
            child_report = Report()
            _fuse_children(child, recorded.get(name), options, child_report, _join(path, name))
            report.include(child_report, name)
            continue
        fused, child_report = fuse_module(child, recorded.get(name), options, _join(path, name))
        report.include(child_report, name)
        if child_report.merges:
            parent.set_submodule(name, fused)


def _record_inputs(parent: nn.Module, inputs: tuple, children: dict[str, nn.Module]) -> dict[str, tuple]:
    """The positional inputs each child is called with when ``parent`` runs once (if called once)."""
    seen: dict[str, list] = {name: [] for name in children}

    def recorder(name):
        def hook(module, args, kwargs):
            seen[name].append(None if kwargs else tuple(args))

        return hook

    handles = [child.register_forward_pre_hook(recorder(n), with_kwargs=True) for n, child in children.items()]
    try:
        with torch.no_grad():
            parent(*inputs)
    except Exception as error:
        raise ValueError(f"example_inputs do not fit the model: {error}") from error
    finally:
        for handle in handles:
            handle.remove()
    return {name: calls[0] for name, calls in seen.items() if len(calls) == 1 and calls[0] is not None}


def _exists(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def keep_plain_attributes(original: nn.Module, fused: nn.Module) -> None:
    """Copy the plain attributes (``num_classes``, flags, sizes) of ``original``'s modules onto ``fused``'s."""
    for name, source in original.named_modules():
        if not _exists(fused, name):
            continue
        target = fused.get_submodule(name)
        for key, value in vars(source).items():
            if key.startswith("_") or key == "training" or hasattr(target, key):
                continue
            if isinstance(value, (nn.Module, torch.Tensor)):
                continue
            setattr(target, key, value)
