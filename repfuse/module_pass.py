"""The pass over one module: trace, analyse, rewrite; where it cannot trace, its children.

A module ``torch.fx`` cannot trace (data-dependent control flow, unsupported Python)
is kept with its own ``forward``, and each of its children is fused on its own: the
largest traceable submodules are fused.  A module with hooks is traced on its own
and its hooks are moved to the result, so that they run where they ran.
Where example inputs are given, each child's inputs are recorded by running its
parent once, so that its shapes are known too.
"""

from __future__ import annotations

import copy
import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.fx import GraphModule
from torch.fx.passes.shape_prop import ShapeProp

from .analysis import Paths, analyze
from .analysis.policy import CostPolicy, MaximalPolicy
from .describe import describe
from .in_place import run_activations_in_place
from .errors import TraceError
from .report import KeptModule, RefusalRecord, Report, count
from .rewrite import rewrite
from .ownership import copy_hooks, detach, keep_plain_attributes, preserved, shell
from .rules import REGISTRY
from .trace import Traced, trace


@dataclass(frozen=True)
class Options:
    """What the caller asked for: the policy, tracing arguments, the model's inputs."""

    policy: CostPolicy | MaximalPolicy
    concrete_args: dict[str, Any] | None = None
    leaf_modules: Sequence[type | str] = ()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the duration (and back on after, if it was on).

    The pass makes many small, short-lived objects (nodes, values, maps); each time
    their count crosses the collector's threshold it would scan every object of the
    process, the model's modules and tensors included.  Cycles made meanwhile are
    collected once it is back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fresh_copies(inputs: tuple) -> tuple:
    """Copies of the tensors of ``inputs`` for one run: a model may write into its inputs,
    and each run must see the caller's values and leave them as they are."""
    return tuple(item.clone() if isinstance(item, torch.Tensor) else item for item in inputs)


def propagate_shapes(traced: Traced, inputs: tuple) -> None:
    """Record the shape of every node of ``traced.graph`` by running it on ``inputs``."""
    try:
        with torch.no_grad():
            ShapeProp(traced.module()).propagate(*fresh_copies(inputs))
    except Exception as error:
        raise ValueError(f"example_inputs do not fit the model: {error}") from error
    finally:
        traced.graph.owning_module = None  # that module was for this run only


def fuse_module(
    module: nn.Module, inputs: tuple | None, options: Options, path: str = "", memo: dict | None = None
) -> tuple[nn.Module, Report]:
    """``module`` (at ``path`` in the model) fused where it can be traced, and what was done.

    ``module`` is not changed; the result is a new module that shares nothing with it:
    a ``GraphModule``, or a copy of ``module`` whose children are fused.
    """
    memo = {} if memo is None else memo
    if _is_requested_leaf(module, path, options):
        return copy.deepcopy(module, memo), Report(kept=[KeptModule("", "a leaf module by request: kept as it is")])
    if REGISTRY.is_leaf(module):
        return copy.deepcopy(module, memo), Report()  # one op: nothing to merge it with here
    try:
        # Tracing runs ``forward``, and the tracer adds its tensor constants to ``module``:
        # what they change is undone once the graph and the module running it are made.
        with preserved(module):
            traced = trace(module, options.concrete_args if not path else None, _relative(options.leaf_modules, path))
            gm, report = _fuse_graph(module, traced, inputs, options)
    except TraceError as error:
        report = Report(kept=[KeptModule("", f"{error}: kept as it is, its children fused")])
        copied = shell(module, memo)
        _fuse_submodules(copied, [name for name, _ in module.named_children()], inputs, options, report, path, memo)
        return copied, report
    built = {merge.module for merge in report.merges if merge.module}
    kept = traced.kept
    report.kept += [KeptModule(name, reason) for name, reason in kept.items()]
    whole = [name for name, reason in kept.items() if "its children fused" in reason and _exists(gm, name)]
    _fuse_submodules(gm, whole, inputs, options, report, path, memo, whole=True)
    hooked = [name for name, reason in kept.items() if "hooks" in reason and _exists(gm, name)]
    _fuse_submodules(gm, hooked, inputs, options, report, path, memo)
    detach(gm, list(module.modules()), memo)
    run_activations_in_place(gm, built)  # on the copies: the caller's modules are not changed
    keep_plain_attributes(module, gm, memo)
    copy_hooks(module, gm)
    return gm, report


def _fuse_graph(module: nn.Module, traced: Traced, inputs: tuple | None, options: Options) -> tuple[GraphModule, Report]:
    """The traced graph of ``module`` rewritten, as a new ``GraphModule`` (holding ``module``'s kept modules)."""
    if inputs is not None and not options.concrete_args:
        propagate_shapes(traced, inputs)
    paths = Paths(module)
    before = count(traced.graph, paths)
    analysis = analyze(traced.graph, paths, policy=options.policy)
    refusals = [RefusalRecord(describe(r.node, paths), r.reason) for r in analysis.refusals]
    rewritten = rewrite(traced.graph, paths, analysis)
    gm = rewritten.module(paths, type(module).__name__)
    return gm, Report(before, count(gm.graph, Paths(gm)), rewritten.merges, refusals)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_requested_leaf(module: nn.Module, path: str, options: Options) -> bool:
    types = tuple(m for m in options.leaf_modules if isinstance(m, type))
    return bool(path) and (isinstance(module, types) or path in options.leaf_modules)


def _relative(leaf_modules: Sequence[type | str], path: str) -> list[type | str]:
    """``leaf_modules`` with names made relative to the submodule at ``path``."""
    prefix = f"{path}." if path else ""
    return [
        m if isinstance(m, type) else m[len(prefix) :]
        for m in leaf_modules
        if isinstance(m, type) or m.startswith(prefix)
    ]


def _fuse_submodules(
    parent: nn.Module,
    names: list[str],
    inputs,
    options: Options,
    report: Report,
    path: str,
    memo: dict,
    whole: bool = False,
) -> None:
    """Put in place of each named submodule of ``parent`` its fused form, made on its own.

    With ``whole``, each submodule is kept (the caller has said why) and its children fused.
    """
    if not names:
        return
    children = {name: parent.get_submodule(name) for name in names}
    recorded = _record_inputs(parent, inputs, children) if inputs is not None else {}
    for name, child in children.items():
        child_path = _join(path, name)
        if whole:
            child_report = Report()
            fused = shell(child, memo)
            grandchildren = [n for n, _ in child.named_children()]
            _fuse_submodules(fused, grandchildren, recorded.get(name), options, child_report, child_path, memo)
        else:
            fused, child_report = fuse_module(child, recorded.get(name), options, child_path, memo)
        report.include(child_report, name)
        parent.set_submodule(name, fused)


def _record_inputs(parent: nn.Module, inputs: tuple, children: dict[str, nn.Module]) -> dict[str, tuple]:
    """The positional inputs each child is called with when ``parent`` runs once (if called once)."""
    seen: dict[str, list] = {name: [] for name in children}

    def recorder(name):
        def hook(module, args, kwargs):
            seen[name].append(None if kwargs else fresh_copies(args))  # as they are now, whatever runs later

        return hook

    handles = [child.register_forward_pre_hook(recorder(n), with_kwargs=True) for n, child in children.items()]
    try:
        with torch.no_grad():
            parent(*fresh_copies(inputs))
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
