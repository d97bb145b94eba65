"""Tracing a model into a ``torch.fx`` graph the rules can read."""

from __future__ import annotations

from torch import nn
from torch.fx import GraphModule, Tracer

from .errors import TraceError
from .rules import REGISTRY


class LeafTracer(Tracer):
    """``torch.fx``'s tracer, keeping whole every module a rule knows.

    Subclasses of ``nn.BatchNorm2d``, ``nn.Conv2d`` and the like that keep their
    class's ``forward`` stay single ops instead of being traced through (their
    ``forward`` checks input ranks with Python control flow that ``torch.fx`` cannot
    trace).
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return REGISTRY.is_leaf(m) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> GraphModule:
    """``model`` as a ``GraphModule``; :class:`TraceError` if ``torch.fx`` cannot trace it."""
    try:
        graph = LeafTracer().trace(model)
    except Exception as error:  # torch.fx raises many kinds of errors
        raise TraceError(f"torch.fx could not trace {type(model).__name__}: {error}") from error
    return GraphModule(model, graph, type(model).__name__)
