"""Tracing a model into a ``torch.fx`` graph the rules can read."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn
from torch.fx import Graph, GraphModule, Proxy, Tracer
from torch.nn.modules import module as module_globals

from .errors import TraceError
from .rules import REGISTRY

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")


def has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks of its own."""
    return any(getattr(module, name, None) for name in _HOOKS)


def has_global_hooks() -> bool:
    """Whether hooks are registered for every module (``register_module_forward_hook``)."""
    return any(getattr(module_globals, name, None) for name in _GLOBAL_HOOKS)


_IN_PLACE_OPERATORS = (
    "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow",
    "imatmul", "iand", "ior", "ixor", "ilshift", "irshift",
)  # fmt: skip


class InPlaceProxy(Proxy):
    """A ``torch.fx`` proxy that records ``a += b`` as ``operator.iadd`` (and so on) and ``a[i] = v``.

    ``torch.fx``'s own proxy has no ``__iadd__``, so Python runs ``a = a + b`` instead:
    the graph then computes a new tensor where the model writes into ``a``, and any
    other name for that tensor (``skip = a`` before it) would read the old values.  It
    has no ``__setitem__`` either, so a model that assigns into a slice cannot be
    traced.  ``torch.fx`` writes these nodes back as ``a += b`` and ``a[i] = v``, so the
    traced module does what the model does.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})


def _in_place(name: str):
    target = getattr(operator, name)

    def apply(self: Proxy, other: Any) -> Proxy:
        return self.tracer.create_proxy("call_function", target, (self, other), {})

    apply.__name__ = f"__{name}__"
    return apply


for _name in _IN_PLACE_OPERATORS:
    setattr(InPlaceProxy, f"__{_name}__", _in_place(_name))


class LeafTracer(Tracer):
    """``torch.fx``'s tracer, keeping whole the modules it must not trace through.

    Kept whole: every module a rule knows that keeps its class's ``forward`` (so that
    subclasses of ``nn.BatchNorm2d`` and the like stay single ops: their ``forward``
    checks ranks with Python control flow), every module with hooks (tracing through
    would drop them), the classes or qualified names in ``leaf_modules``, and the
    modules found untraceable (``{qualified name: error}``).  ``kept`` records the
    last three kinds as ``{qualified name: reason}``.
    """

    def __init__(self, leaf_modules: Sequence[type | str] = (), untraceable: dict[str, str] | None = None):
        super().__init__()
        self.leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self.leaf_names = {m for m in leaf_modules if isinstance(m, str)}
        self.untraceable = untraceable or {}
        self.kept: dict[str, str] = {}

    def proxy(self, node) -> Proxy:
        return InPlaceProxy(node, self)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:
            if not hasattr(error, "repfuse_module"):
                error.repfuse_module = self.path_of_module(m)  # the innermost module that failed
            raise

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if REGISTRY.is_leaf(m):
            return True
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            self.kept[module_qualified_name] = "a leaf module by request: kept as it is"
            return True
        if module_qualified_name in self.untraceable:
            self.kept[module_qualified_name] = (
                f"torch.fx could not trace it ({self.untraceable[module_qualified_name]}): "
                "kept whole, its children fused"
            )
            return True
        if has_hooks(m):
            self.kept[module_qualified_name] = "it has hooks: traced on its own, and its hooks moved to the result"
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass(frozen=True)
class Traced:
    """``model``'s graph, whose ``call_module`` and ``get_attr`` targets are paths in ``model``.

    ``kept`` are the submodules kept whole, with the reason.  No ``GraphModule`` is made
    here: the pass makes one, once, from the graph it has rewritten.
    """

    model: nn.Module
    graph: Graph
    kept: dict[str, str]

    def module(self) -> GraphModule:
        """The graph as a ``GraphModule`` that holds ``model``'s modules (not copies)."""
        return GraphModule(self.model, self.graph, type(self.model).__name__)


def trace(
    model: nn.Module,
    concrete_args: dict[str, Any] | None = None,
    leaf_modules: Sequence[type | str] = (),
) -> Traced:
    """``model``'s graph, and the submodules kept whole with the reason.

    A submodule that ``torch.fx`` cannot trace is kept whole and the trace is retried;
    :class:`TraceError` if the model's own ``forward`` cannot be traced.
    """
    untraceable: dict[str, str] = {}
    while True:
        tracer = LeafTracer(leaf_modules, untraceable)
        try:
            graph = tracer.trace(model, concrete_args)
        except Exception as error:  # torch.fx raises many kinds of errors
            failing = getattr(error, "repfuse_module", "")
            if not failing or failing in untraceable:
                raise TraceError(f"torch.fx could not trace {type(model).__name__}: {_first_line(error)}") from error
            untraceable[failing] = _first_line(error)
            continue
        return Traced(model, graph, tracer.kept)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
