"""Helpers shared by rules: tensor ranks, channel layouts and values written as maps.

Channels sit on dim ``-(r + 1)`` (counting from the end) of the tensors of a rank-``r``
map: dim 1 of a batched convolution's tensors, the last dim of a linear layer's.  A
constant broadcast onto such a tensor is a per-channel constant when it varies only
along that dim and has no more dims than the tensor.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from ..algebra import (
    ConvMap,
    PendingSum,
    Cost,
    Refused,
    channel_vector,
    compose,
    cost,
    depthwise,
    elementwise_cost,
    lift_rank,
    pending_scale_shift,
    require,
    scale_shift,
)
from ..value import Value
from .registry import RuleContext


def value_ndim(ctx: RuleContext, value: Value) -> int | None:
    """The rank of the tensor ``value`` denotes, where known.

    From shape information if there is some; else from the op that fixed its spatial
    dims: a rank-``r`` convolution or pooling reads batched tensors of ``r + 2`` dims
    (unbatched ones are not told apart without ``example_inputs``).  A linear layer
    accepts any rank, and padding pads any tensor, so they leave it unknown.
    """
    known = ctx.ndim(value.root)
    if known is not None:
        return known
    if value.spatial_dims is not None:
        return value.spatial_dims + 2
    return None


def as_channels(value: Value, channels: int, rank: int) -> tuple[ConvMap, Cost]:
    """``value``'s map and cost over ``rank`` spatial dims and ``channels`` channels."""
    if not value.uniform:
        _require_rank(value, rank)
        return value.map, value.cost
    return depthwise(lift_rank(value.map, rank), channels), value.cost * channels


def _require_rank(value: Value, rank: int) -> None:
    if value.geometry.rank != rank:
        raise Refused(f"a rank-{value.geometry.rank} map meets a rank-{rank} map")


def aligned(values: Sequence[Value], pending: bool = False) -> tuple[list[ConvMap | PendingSum], list[Cost], bool]:
    """The values' maps over one rank and one channel count, their costs, and whether uniform.

    Uniform maps take the channel count and rank of the others; if all are uniform
    they stay one-channel maps, lifted to their largest rank.  With ``pending``, a
    value that is a sum not computed yet is returned as that sum (see
    :class:`~repfuse.algebra.PendingSum`), so that a chain of sums is computed once.
    """
    concrete = [v for v in values if not v.uniform]
    if not concrete:
        rank = max(v.map.rank for v in values)
        return [lift_rank(v.map, rank) for v in values], [v.cost for v in values], True
    rank = concrete[0].geometry.rank
    channels = concrete[0].geometry.in_channels
    forms, costs = [], []
    for v in values:
        if pending and not v.uniform:
            _require_rank(v, rank)
            form, c = v.form, v.cost
        else:
            form, c = as_channels(v, channels, rank)
        forms.append(form)
        costs.append(c)
    return forms, costs, False


def then(
    ctx: RuleContext,
    arg: Any,
    second: ConvMap,
    *,
    uniform: bool = False,
    convolves: bool = True,
    spatial_dims: int | None = None,
) -> Value:
    """The value of ``second`` applied to the tensor ``arg``, merged with ``arg``'s value if it can be.

    The merge (composition) must be exact and pay off under the cost policy; otherwise
    this op starts a new region at ``arg``, with the reason noted.  ``convolves`` and
    ``spatial_dims`` are as for :meth:`RuleContext.make`.
    """
    extra = dict(convolves=convolves, spatial_dims=spatial_dims)
    own = cost(second)
    source = ctx.value(arg)
    if source.is_root or source.is_identity:
        return ctx.make(second, (source,), cost=source.cost + own, uniform=uniform, **extra)
    try:  # ``applied``: ``second`` as it acts on ``first``'s channels and rank
        if uniform and source.uniform:
            rank = max(source.map.rank, second.rank)
            first, first_cost = lift_rank(source.map, rank), source.cost
            applied = lift_rank(second, rank)
        elif uniform:
            first, first_cost = source.map, source.cost
            applied = depthwise(lift_rank(second, first.rank), first.out_channels)
            own = cost(applied)
        else:
            first, first_cost = as_channels(source, second.in_channels, second.rank)
            applied = second
        merged = compose(first, applied)
        parts = first_cost * math.prod(applied.stride) + own
        reason = ctx.verdict(merged, parts)
        require(reason is None, reason or "")
    except Refused as refusal:
        ctx.note(f"not merged with `{arg.name}` before it: {refusal.reason}")
        return ctx.make(second, (ctx.root(arg),), cost=cost(second), uniform=uniform, **extra)
    return ctx.make(merged, (source,), cost=parts, uniform=uniform and source.uniform, **extra)


def per_channel(ctx: RuleContext, value: Value, constant: Any, what: str) -> tuple[float | Tensor, int | None]:
    """A constant broadcast onto ``value``'s tensor, as a scalar or one number per channel.

    Returns ``(scalar or vector, rank)``: the rank is the map rank the layout of a
    per-channel constant implies (``None`` for a scalar).  Refuses a constant that
    varies along another dim, or has more dims than the tensor.
    """
    if isinstance(constant, bool) or not isinstance(constant, (int, float, Tensor)):
        raise Refused(f"{what} is not a number or a tensor")
    if not isinstance(constant, Tensor):
        return float(constant), None
    require(not constant.is_complex(), f"{what} is complex")
    shape = tuple(constant.shape)
    ndim = value_ndim(ctx, value)
    if ndim is not None:
        require(len(shape) <= ndim, f"{what} has more dims ({len(shape)}) than the tensor ({ndim})")
    varying = [len(shape) - i for i, size in enumerate(shape) if size != 1]  # dims from the end
    if not varying:
        if ndim is None:
            require(len(shape) <= 1, f"{what} may add dims to a tensor of unknown rank (pass example_inputs)")
        return float(constant.reshape(()).item()), None
    require(len(varying) == 1, f"{what} of shape {shape} varies along more than the channel dim")
    axis = varying[0]  # channels sit on dim -axis
    rank = axis - 1
    expected = value.geometry.rank + 1 if not value.uniform else value.spatial_dims and value.spatial_dims + 1
    if expected:
        require(
            axis == expected,
            f"{what} of shape {shape} varies along dim -{axis}, but the channels are on dim -{expected}",
        )
    require(
        axis > value.geometry.rank,
        f"{what} of shape {shape} varies along dim -{axis}, one of the {value.geometry.rank} spatial dims",
    )
    if ndim is None:
        require(
            len(shape) <= rank + 2 and (rank > 0 or len(shape) == 1),
            f"{what} may add dims to a tensor of unknown rank (pass example_inputs)",
        )
    return constant.detach().to(torch.float64).reshape(-1), rank


def scaled(
    ctx: RuleContext,
    value: Value,
    scale: float | Tensor | None,
    shift: float | Tensor | None,
    channels_rank: int | None = None,
) -> Value:
    """``scale * value + shift`` (each a scalar, a per-channel vector or ``None``)."""
    vectors = [t for t in (scale, shift) if isinstance(t, Tensor)]
    if value.uniform and vectors:
        channels = vectors[0].numel()
        form, base = as_channels(value, channels, max(channels_rank or 0, value.geometry.rank))
        uniform = False
    elif value.uniform:
        form, base, uniform, channels = value.map, value.cost, True, 1
    else:
        form, base, uniform, channels = value.form, value.cost, False, value.geometry.out_channels
    for vector in vectors:
        channel_vector(vector, channels, PendingSum.of(form).terms[0].weight)  # refuses a channel-count mismatch
    result = scale_shift(form, scale, shift) if uniform else pending_scale_shift(form, scale, shift)
    return ctx.make(result, (value,), cost=base + elementwise_cost(channels), uniform=uniform, fold=True)

