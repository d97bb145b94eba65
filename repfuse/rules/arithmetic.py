"""Linear arithmetic on values: sums of branches, and scales and shifts by constants.

    sum_k a_k * M_k(x) + sum_j b_j * c_j = (sum_k a_k * M_k)(x) + shift

for maps ``M_k`` of one root and constants ``c_j`` that are scalars or per-channel
(see :func:`.common.per_channel`).  Every spelling is one rule: ``+``, ``-``, ``*``,
``/``, unary ``-``, their in-place forms, ``torch.add/sub/rsub/mul/div/neg`` (with
``alpha``), ``Tensor`` methods, ``sum(...)`` (which starts from the literal 0) and
``torch.stack([...]).sum(0)``.  A product or quotient of two computed tensors is not
linear: such an op is opaque.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor
from torch.fx import Node

from ..algebra import (
    ZERO,
    PendingSum,
    Refused,
    elementwise_cost,
    pending_scale_shift,
    pending_sum,
    require,
    scale_shift,
    sum_maps,
)
from ..value import Value, one_root
from .common import aligned, as_channels, per_channel, scaled
from .registry import REGISTRY, Opaque, RuleContext, bind, rule


aten = torch.ops.aten


def _binary(input, other, alpha=1, *, out=None) -> None: ...


def _unary(input, *, out=None) -> None: ...


def _division(input, other, *, rounding_mode=None, out=None) -> None: ...


def _sum_signature(input, dim=None, keepdim=False, *, dtype=None) -> None: ...


def _stack_signature(tensors, dim=0, *, out=None) -> None: ...


def _is_computed(ctx: RuleContext, arg: Any) -> bool:
    return isinstance(arg, Node) and not ctx.is_constant(arg)


def _number(ctx: RuleContext, arg: Any, what: str) -> float:
    number = ctx.constant(arg, what)
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise Refused(f"{what} is not a number")
    return number


def _fresh(ctx: RuleContext, node: Node) -> Value:
    """The value of the tensor an in-place op writes into, which nothing else may read."""
    target = node.args[0]
    require(_is_computed(ctx, target), "an in-place op writes into a constant")
    value = ctx.value(target)
    require(
        not value.is_root and not value.is_identity,
        f"an in-place op writes into `{target.name}`, which other ops or the caller may still read",
    )
    return value


def combination(ctx: RuleContext, terms: list[tuple[Any, float]], via: tuple[Node, ...] = ()) -> Value:
    """The value of ``sum factor * operand`` over tensor and constant operands."""
    values, factors, constants = [], [], []
    for operand, factor in terms:
        if _is_computed(ctx, operand):
            values.append(ctx.value(operand))
            factors.append(factor)
            continue
        constant = ctx.constant(operand, "a constant operand")
        if isinstance(constant, bool) or not isinstance(constant, (int, float, Tensor)):
            raise Opaque()  # not arithmetic on tensors (lists, strings, shapes)
        if not isinstance(constant, Tensor) and constant == 0:
            continue  # the 0 that sum(...) starts from
        constants.append((constant, factor))
    if not values:
        raise Opaque()  # arithmetic on constants
    one_root(values)
    forms, costs, uniform = aligned(values, pending=True)
    rescale = scale_shift if uniform else pending_scale_shift  # uniform maps stay maps (one channel each)
    forms = [f if factor == 1 else rescale(f, factor) for f, factor in zip(forms, factors)]
    if len(forms) == 1:
        merged = forms[0]
    else:  # a sum of branches is computed once, where the chain of sums ends
        merged = sum_maps(forms) if uniform else pending_sum(forms)
    cost = sum(costs, ZERO)
    if len(terms) > 1 or factors != [1]:
        channels = 1 if uniform else (merged.geometry if isinstance(merged, PendingSum) else merged).out_channels
        cost = cost + elementwise_cost(channels, len(terms))
    shift, rank = None, None
    spatial_dims = next((v.spatial_dims for v in values if v.spatial_dims is not None), None)
    summed = Value(values[0].root, merged, uniform, cost=cost, spatial_dims=spatial_dims)
    for constant, factor in constants:
        part, part_rank = per_channel(ctx, summed, constant, "a constant operand")
        rank = part_rank if part_rank is not None else rank
        part = part * factor
        if shift is None:
            shift = part
        else:
            require(
                not (isinstance(shift, Tensor) and isinstance(part, Tensor)) or shift.numel() == part.numel(),
                "constant operands with different channel counts",
            )
            shift = shift + part
    if shift is None:
        return ctx.make(merged, tuple(values), cost=cost, uniform=uniform, via=via)
    return _shifted(ctx, summed, tuple(values), shift, rank, via)


def _shifted(ctx: RuleContext, summed: Value, values: tuple[Value, ...], shift, rank, via) -> Value:
    """``summed + shift`` made as this node's value, merging ``values``."""
    if summed.uniform and isinstance(shift, Tensor):
        m, cost = as_channels(summed, shift.numel(), max(rank or 0, summed.geometry.rank))
        return ctx.make(scale_shift(m, None, shift), values, cost=cost, uniform=False, via=via)
    if isinstance(shift, Tensor):
        channels = summed.geometry.out_channels
        require(shift.numel() == channels, f"{shift.numel()} shifts for {channels} channels")
    shifted = scale_shift(summed.map, None, shift) if summed.uniform else pending_scale_shift(summed.form, None, shift)
    return ctx.make(shifted, values, cost=summed.cost, uniform=summed.uniform, via=via)


# -- sums and differences ---------------------------------------------------------------
@rule(operator.add, torch.add, torch.Tensor.add, aten.add.Tensor, aten.add.Scalar)
def add(node: Node, ctx: RuleContext) -> Value:
    """``a + b``, ``torch.add(a, b, alpha=k)``."""
    args = bind(node, _binary)
    require(args["out"] is None, "the result is written into `out`")
    return combination(ctx, [(args["input"], 1), (args["other"], _number(ctx, args["alpha"], "alpha"))])


@rule(operator.sub, torch.sub, torch.subtract, torch.Tensor.sub, aten.sub.Tensor, aten.sub.Scalar)
def subtract(node: Node, ctx: RuleContext) -> Value:
    """``a - b``, ``torch.sub(a, b, alpha=k)``."""
    args = bind(node, _binary)
    require(args["out"] is None, "the result is written into `out`")
    return combination(ctx, [(args["input"], 1), (args["other"], -_number(ctx, args["alpha"], "alpha"))])


@rule(torch.rsub, aten.rsub.Tensor, aten.rsub.Scalar)
def reverse_subtract(node: Node, ctx: RuleContext) -> Value:
    """``torch.rsub(a, b, alpha=k) = b - k * a``."""
    args = bind(node, _binary)
    return combination(ctx, [(args["other"], 1), (args["input"], -_number(ctx, args["alpha"], "alpha"))])


@rule(operator.iadd, torch.Tensor.add_, operator.isub, torch.Tensor.sub_)
def add_in_place(node: Node, ctx: RuleContext) -> Value:
    """``a += b``, ``a -= b``: as ``a + b``, provided ``a`` is a fresh result nothing else reads."""
    args = bind(node, _binary)
    sign = -1 if node.target in (operator.isub, torch.Tensor.sub_) else 1
    _fresh(ctx, node)
    return combination(ctx, [(args["input"], 1), (args["other"], sign * _number(ctx, args["alpha"], "alpha"))])


REGISTRY.gathering(torch.stack, aten.stack.default)


@rule(torch.sum, torch.Tensor.sum, aten.sum.dim_IntList)
def stacked_sum(node: Node, ctx: RuleContext) -> Value:
    """``torch.stack([a, b, ...]).sum(0) = a + b + ...``."""
    args = bind(node, _sum_signature)
    stack = args["input"]
    if not (
        isinstance(stack, Node)
        and stack.op == "call_function"
        and stack.target in (torch.stack, aten.stack.default)
        and args["dim"] in (0, (0,), [0])
        and not args["keepdim"]
        and args["dtype"] is None
    ):
        raise Opaque()
    stacked = bind(stack, _stack_signature)
    require(stacked["dim"] == 0 and stacked["out"] is None, "the stack is not along a new leading dim")
    require(len(stack.users) == 1, f"`{stack.name}` is also read by other ops")
    return combination(ctx, [(tensor, 1) for tensor in stacked["tensors"]], via=(stack,))


# -- scales -----------------------------------------------------------------------------
def _scale(ctx: RuleContext, tensor: Any, constant: Any, invert: bool = False) -> Value:
    value = ctx.value(tensor)
    factor, rank = per_channel(ctx, value, ctx.constant(constant, "the factor"), "the factor")
    if invert:
        require(bool(torch.all(torch.as_tensor(factor) != 0)), "division by zero")
        factor = 1 / factor
    return scaled(ctx, value, factor, None, rank)


def _scale_operands(ctx: RuleContext, a: Any, b: Any) -> tuple[Any, Any]:
    """``(tensor, constant)`` of a product; opaque unless exactly one operand is computed."""
    if _is_computed(ctx, a) and not _is_computed(ctx, b):
        return a, b
    if _is_computed(ctx, b) and not _is_computed(ctx, a):
        return b, a
    raise Opaque()  # a product of two tensors, or of two constants


@rule(operator.mul, torch.mul, torch.multiply, torch.Tensor.mul, aten.mul.Tensor, aten.mul.Scalar)
def multiply(node: Node, ctx: RuleContext) -> Value:
    """``a * c`` and ``c * a`` for a constant ``c``."""
    args = bind(node, _binary)
    require(args["out"] is None, "the result is written into `out`")
    return _scale(ctx, *_scale_operands(ctx, args["input"], args["other"]))


@rule(operator.imul, torch.Tensor.mul_)
def multiply_in_place(node: Node, ctx: RuleContext) -> Value:
    """``a *= c``."""
    args = bind(node, _binary)
    _fresh(ctx, node)
    require(not _is_computed(ctx, args["other"]), "a product of two tensors is not linear")
    return _scale(ctx, args["input"], args["other"])


@rule(
    operator.truediv,
    torch.div,
    torch.divide,
    torch.true_divide,
    torch.Tensor.div,
    aten.div.Tensor,
    aten.div.Scalar,
    aten.div.Tensor_mode,
)
def divide(node: Node, ctx: RuleContext) -> Value:
    """``a / c`` for a constant ``c``."""
    args = bind(node, _division)
    if not _is_computed(ctx, args["input"]) or _is_computed(ctx, args["other"]):
        raise Opaque()  # a constant divided by a tensor, or a quotient of tensors
    require(args["rounding_mode"] is None, f"division with rounding_mode={args['rounding_mode']!r} is not linear")
    require(args["out"] is None, "the result is written into `out`")
    return _scale(ctx, args["input"], args["other"], invert=True)


@rule(operator.itruediv, torch.Tensor.div_)
def divide_in_place(node: Node, ctx: RuleContext) -> Value:
    """``a /= c``."""
    args = bind(node, _division)
    _fresh(ctx, node)
    require(not _is_computed(ctx, args["other"]), "a quotient of two tensors is not linear")
    require(args["rounding_mode"] is None, f"division with rounding_mode={args['rounding_mode']!r} is not linear")
    return _scale(ctx, args["input"], args["other"], invert=True)


@rule(operator.neg, torch.neg, torch.negative, torch.Tensor.neg, aten.neg.default)
def negate(node: Node, ctx: RuleContext) -> Value:
    """``-a``."""
    args = bind(node, _unary)
    require(args["out"] is None, "the result is written into `out`")
    return combination(ctx, [(args["input"], -1)])
