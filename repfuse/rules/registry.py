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

from ..algebra import ConvMap, Cost, PendingSum, Refused
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

    def prepared(self) -> Any:
        """What the rule's preparation computed for this node's module (``None``: nothing)."""

    def make(
        self,
        map: ConvMap | PendingSum,
        inputs: tuple[Value, ...],
        *,
        cost: Cost,
        uniform: bool = False,
        via: tuple[Node, ...] = (),
        convolves: bool = False,
        spatial_dims: int | None = None,
        fold: bool = False,
    ) -> Value:
        """This node's value: ``map`` of the common root of ``inputs``, merging those that are not roots.

        ``map`` may be a sum not computed yet (:func:`~repfuse.algebra.pending_sum`).

        ``cost`` is what the merged ops cost as they are; ``convolves`` says this op is a
        convolution, linear layer or pooling (so that the region is worth a new conv);
        ``spatial_dims`` is the number of spatial dims this op fixes for its tensors
        (default: as its inputs); ``fold`` says this op is a per-channel affine map of its
        one input (never worth keeping apart from it), so that the input's weights can go.
        """


Rule = Callable[[Node, RuleContext], Value]

#: Work a module rule does for all the modules of a graph at once, before the walk:
#: ``{module: what the rule reads back with RuleContext.prepared()}``.
Preparation = Callable[[list[nn.Module]], dict[nn.Module, Any]]


class Opaque(Exception):
    """Raised by a rule whose op, with these operands, is nothing the analysis merges.

    Unlike :class:`~repfuse.algebra.Refused` it carries no reason for the report:
    ``n + 1`` on a shape, or ``x + x`` with no convolution in sight, is no missed merge.
    """


class Registry:
    """Rules keyed by module class (found along the MRO), function or ``torch.Tensor`` method."""

    def __init__(self) -> None:
        self._rules: dict[object, Rule] = {}
        self.preparations: dict[Rule, Preparation] = {}
        self.gathering_ops: set[object] = set()

    def gathering(self, *ops: object) -> None:
        """Declare ``ops`` (``torch.stack``) whose inputs the op reading them may merge (``via``)."""
        self.gathering_ops.update(ops)

    def register(self, *ops: object, prepare: Preparation | None = None) -> Callable[[Rule], Rule]:
        """Register a rule for ``ops``; ``prepare`` does its work for all the modules it sees at once."""

        def decorate(rule: Rule) -> Rule:
            for op in ops:
                self._rules[op] = rule
            if prepare is not None:
                self.preparations[rule] = prepare
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

    def rule_for(self, node: Node, module: nn.Module | None = None) -> Rule | None:
        """The rule for ``node`` (``module``: what a ``call_module`` node calls).

        Refuses a module subclass that overrides ``forward``.
        """
        if node.op == "call_module":
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
def _parameters(function: Callable[..., None]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The names of ``function``'s positional parameters, and every parameter's default (``_EMPTY``: required)."""
    positional, defaults = [], {}
    for p in inspect.signature(function).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{function.__name__} takes *args or **kwargs: not a rule signature")
        defaults[p.name] = _EMPTY if p.default is p.empty else p.default
        if p.kind is not p.KEYWORD_ONLY:
            positional.append(p.name)
    return tuple(positional), defaults


_EMPTY = object()


def bind(node: Node, signature: Callable[..., None]) -> dict[str, Any]:
    """``node``'s arguments by name, with ``signature``'s defaults filled in."""
    positional, defaults = _parameters(signature)
    if len(node.args) > len(positional):
        raise Refused(f"unexpected arguments: {len(node.args)} positional for {len(positional)}")
    bound = dict(zip(positional, node.args))
    for name, value in node.kwargs.items():
        if name in bound or name not in defaults:
            raise Refused(f"unexpected argument {name!r}")
        bound[name] = value
    if len(bound) < len(defaults):
        for name, default in defaults.items():
            if name not in bound:
                if default is _EMPTY:
                    raise Refused(f"missing argument {name!r}")
                bound[name] = default
    return bound
