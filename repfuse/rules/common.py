"""Helpers shared by rules: tensor ranks and turning identity values into maps."""

from __future__ import annotations

from typing import Sequence

from ..algebra import ConvMap, Refused, identity
from ..value import Value
from .registry import RuleContext


def value_ndim(ctx: RuleContext, value: Value) -> int | None:
    """The rank of the tensor ``value`` denotes, where known.

    A convolution's input may be batched or not; where no shape information says
    which, a rank-``r`` convolution's tensors are taken as batched (``r + 2`` dims).
    A linear layer (rank 0) accepts any rank, so it stays unknown.
    """
    known = ctx.ndim(value.root)
    if known is not None:
        return known
    if value.map is not None and value.map.rank > 0:
        return value.map.rank + 2
    return None


def concrete_maps(values: Sequence[Value]) -> list[ConvMap]:
    """The maps of ``values``, with identities written as maps shaped like the others."""
    like = next((v.map for v in values if v.map is not None), None)
    if like is None:
        raise Refused("every operand is the input itself: there is no convolution to merge into")
    device = like.weight.device
    return [v.map if v.map is not None else identity(like.in_channels, like.rank, device=device) for v in values]
