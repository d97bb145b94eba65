"""Concatenation along channels of maps on one root: one convolution, outputs stacked.

    cat([M_1(x), ..., M_n(x)], channels) = concat(M_1, ..., M_n)(x)

Preconditions: the maps have one rank, stride and output size (as for sums), and the
concatenation is along their channel dim.
"""

from __future__ import annotations

import torch
from torch.fx import Node

from ..algebra import Cost, concat, require
from ..value import Value, one_root
from .common import aligned, value_ndim
from .registry import Opaque, RuleContext, bind, rule


def _cat_signature(tensors, dim=0, *, out=None) -> None: ...


def _concatenate_signature(tensors, axis=0, *, out=None) -> None: ...


@rule(torch.cat, torch.concat, torch.concatenate, torch.ops.aten.cat.default)
def cat(node: Node, ctx: RuleContext) -> Value:
    """``torch.cat(tensors, dim)`` along the channel dim."""
    if node.target is torch.concatenate:
        args = bind(node, _concatenate_signature)
        args["dim"] = args.pop("axis")
    else:
        args = bind(node, _cat_signature)
    require(args["out"] is None, "the result is written into `out`")
    tensors = args["tensors"]
    require(isinstance(tensors, (list, tuple)) and tensors, "the tensors are not a list")
    for tensor in tensors:
        require(isinstance(tensor, Node) and not ctx.is_constant(tensor), "a constant is concatenated")
    values = [ctx.value(tensor) for tensor in tensors]
    if all(v.uniform for v in values):
        raise Opaque()  # no convolution fixes the channel counts: nothing to merge
    one_root(values)
    maps, costs, _ = aligned(values)
    rank = maps[0].rank
    dim = ctx.constant(args["dim"], "the dim")
    if dim < 0:
        require(dim == -(rank + 1), f"concatenation along dim {dim}, not the channel dim -{rank + 1}")
    else:
        ndim = value_ndim(ctx, next(v for v in values if not v.uniform))
        require(ndim is not None, "the rank of the concatenated tensors is unknown (pass example_inputs)")
        require(dim == ndim - rank - 1, f"concatenation along dim {dim}, not the channel dim {ndim - rank - 1}")
    merged = concat(maps)
    channels = float(merged.out_channels)
    cost = sum(costs, Cost(0.0, channels, channels))
    return ctx.make(merged, tuple(values), cost=cost)
