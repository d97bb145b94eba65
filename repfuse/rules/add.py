"""Sums of branches on one input: ``a + b``, ``a += b``, ``torch.add(a, b, alpha=k)``, ``sum(...)``.

    A(x) + k * B(x) = (A + k*B)(x)

One rule for every spelling.  Operands must be maps of one root tensor; the input
itself counts as the identity map, and the literal 0 that ``sum(...)`` starts from
contributes nothing.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import Node

from ..algebra import require, scale_shift, sum_maps
from ..value import Value, one_root
from .common import concrete_maps
from .registry import Opaque, RuleContext, bind, rule


def _add_signature(input, other, *, alpha=1, out=None) -> None: ...


def _term(ctx: RuleContext, operand: object) -> Value | float | None:
    """An operand's value, or the constant it is (``None`` for the literal 0, which adds nothing)."""
    if isinstance(operand, Node):
        return ctx.value(operand)
    constant = ctx.constant(operand, "a constant operand")
    if isinstance(constant, (int, float)) and not isinstance(constant, bool) and constant == 0:
        return None
    return constant


def _alpha(ctx: RuleContext, args: dict) -> float:
    require(args["out"] is None, "the sum is written into `out`")
    alpha = ctx.constant(args["alpha"], "alpha")
    require(isinstance(alpha, (int, float)) and not isinstance(alpha, bool), "alpha is not a number")
    return alpha


def _sum(ctx: RuleContext, terms: list[tuple[Value | float | None, float]]) -> Value:
    """The value of ``sum_k factor_k * term_k``."""
    terms = [(value, factor) for value, factor in terms if value is not None]
    values = tuple(value for value, _ in terms if isinstance(value, Value))
    if all(value.map is None for value in values):
        raise Opaque()  # no convolution among the operands: nothing to merge here
    require(len(values) == len(terms), "adding a constant is not merged")
    one_root(values)
    if len(terms) == 1 and terms[0][1] == 1:
        return ctx.make(values[0].map, values)
    maps = concrete_maps(values)
    maps = [m if factor == 1 else scale_shift(m, factor) for m, (_, factor) in zip(maps, terms)]
    return ctx.make(sum_maps(maps), values)


@rule(operator.add, torch.add, torch.Tensor.add)
def add(node: Node, ctx: RuleContext) -> Value:
    """``a + b`` and ``torch.add(a, b, alpha=k)``."""
    args = bind(node, _add_signature)
    alpha = _alpha(ctx, args)
    return _sum(ctx, [(_term(ctx, args["input"]), 1), (_term(ctx, args["other"]), alpha)])


@rule(operator.iadd, torch.Tensor.add_)
def add_in_place(node: Node, ctx: RuleContext) -> Value:
    """``a += b``: a sum, provided ``a`` is a fresh result that nothing else reads."""
    args = bind(node, _add_signature)
    alpha = _alpha(ctx, args)
    target = args["input"]
    require(isinstance(target, Node), "in-place add into a constant")
    first = ctx.value(target)
    require(
        not first.is_root and first.map is not None,
        f"in-place add into `{target.name}`, which other ops or the caller may still read",
    )
    return _sum(ctx, [(first, 1), (_term(ctx, args["other"]), alpha)])
