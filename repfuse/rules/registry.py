"""The rule registry: one transfer function per op, keyed by the op object itself.

A rule receives a node and a :class:`RuleContext` and returns the node's
:class:`~repfuse.value.Value`, or raises :class:`~repfuse.algebra.Refused` with a
reason.  Ops with no rule are opaque: their outputs are roots of new regions.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn
from torch.fx import Node

from ..algebra import ConvMap, Cost, Refused
from ..value import Value


class RuleContext(Protocol):
    """What a rule may ask of the analysis about the node it is given."""

    def module(self) -> nn.Module:
        """The submodule a ``call_module`` node calls."""

    def value(self, arg: Any) -> Value:
        """The value of a tensor argument, which this node may merge (through :meth:`make`)."""

    def root(self, arg: Any) -> Value:
        """A tensor argument as a root: this node starts a new region there."""

    def is_constant(self, arg: Any) -> bool:
        """Whether ``arg`` is a literal or a parameter/buffer rather than a computed tensor."""

    def constant(self, arg: Any, what: str) -> Tensor | float | int | bool | None:
        """A constant argument (literal, parameter or buffer); refuses one computed at run time."""

    def ndim(self, node: Node) -> int | None:
        """The rank of ``node``'s tensor where it is known."""

    def shape(self, node: Node) -> tuple[int, ...] | None:
        """The shape of ``node``'s tensor where shapes were propagated."""

    def verdict(self, merged: ConvMap, parts: Cost) -> str | None:
        """Why the cost policy rejects ``merged`` in place of ops costing ``parts``, or ``None``."""

    def note(self, reason: str) -> None:
        """Record why this node did not merge with something it could have."""

    def make(
        self,
        map: ConvMap,
        inputs: tuple[Value, ...],
        *,
        cost: Cost,
        uniform: bool = False,
        via: tuple[Node, ...] = (),
        convolves: bool = False,
        spatial_dims: int | None = None,
    ) -> Value:
        """This node's value: ``map`` of the common root of ``inputs``, merging those that are not roots.

        ``cost`` is what the merged ops cost as they are; ``convolves`` says this op is a
        convolution, linear layer or pooling (so that the region is worth a new conv);
        ``spatial_dims`` is the number of spatial dims this op fixes for its tensors
        (default: as its inputs).
        """


Rule = Callable[[Node, RuleContext], Value]


class Opaque(Exception):
    """Raised by a rule whose op, with these operands, is nothing the analysis merges.

    Unlike :class:`~repfuse.algebra.Refused` it carries no reason for the report:
    ``n + 1`` on a shape, or ``x + x`` with no convolution in sight, is no missed merge.
    """


class Registry:
    """Rules keyed by module class (found along the MRO), function or ``torch.Tensor`` method."""

    def __init__(self) -> None:
        self._rules: dict[object, Rule] = {}

    def register(self, *ops: object) -> Callable[[Rule], Rule]:
        def decorate(rule: Rule) -> Rule:
            for op in ops:
                self._rules[op] = rule
            return rule

        return decorate

    def module_rule(self, module: nn.Module) -> tuple[type, Rule] | None:
        """The registered class ``module`` is an instance of, and its rule (first along the MRO)."""
        for cls in type(module).__mro__:
            rule = self._rules.get(cls)
            if rule is not None:
                return cls, rule
        return None

    def is_leaf(self, module: nn.Module) -> bool:
        """Whether the analysis sees ``module`` whole: it has a rule and keeps its class's ``forward``."""
        found = self.module_rule(module)
        return found is not None and type(module).forward is found[0].forward

    def rule_for(self, node: Node, owner: nn.Module) -> Rule | None:
        """The rule for ``node``; refuses a module subclass that overrides ``forward``."""
        if node.op == "call_module":
            module = owner.get_submodule(node.target)
            found = self.module_rule(module)
            if found is None:
                return None
            cls, rule = found
            if type(module).forward is not cls.forward:
                raise Refused(f"{type(module).__name__} overrides {cls.__name__}.forward")
            return rule
        if node.op == "call_function":
            return self._rules.get(node.target)
        if node.op == "call_method":
            return self._rules.get(getattr(torch.Tensor, node.target, None))
        return None


REGISTRY = Registry()
rule = REGISTRY.register


@functools.lru_cache(maxsize=None)
def _signature(function: Callable[..., None]) -> inspect.Signature:
    return inspect.signature(function)


def bind(node: Node, signature: Callable[..., None]) -> dict[str, Any]:
    """``node``'s arguments by name, with ``signature``'s defaults filled in."""
    try:
        bound = _signature(signature).bind(*node.args, **node.kwargs)
    except TypeError as error:
        raise Refused(f"unexpected arguments: {error}") from None
    bound.apply_defaults()
    return dict(bound.arguments)
