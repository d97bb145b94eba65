"""Average pooling that counts padded zeros: a depthwise convolution with weight 1/prod(k).

Preconditions: ``count_include_pad=True`` (or no padding), no ``divisor_override``,
and ``ceil_mode`` off or without effect (``(L + 2p - k)`` divisible by the stride
along every spatial dim, which needs the input shape).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from ..algebra import avg_pool, require
from ..value import Value
from .common import then
from .registry import RuleContext, bind, rule

_RANKS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}


def _module_input(input) -> None: ...


def _avg_pool_signature(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
) -> None: ...


def _per_dim(value, rank: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(value)
    return value * rank if len(value) == 1 else value


def _pool(ctx: RuleContext, arg, rank, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    kernel = _per_dim(kernel, rank)
    stride = _per_dim(stride if stride not in (None, [], ()) else kernel, rank)
    padding = _per_dim(padding, rank)
    require(divisor_override is None, "divisor_override divides by another number than the kernel size")
    require(
        count_include_pad or not any(padding),
        "count_include_pad=False divides border windows by fewer taps: not a convolution",
    )
    if ceil_mode:
        shape = ctx.shape(arg) if isinstance(arg, Node) else None
        require(shape is not None, "ceil_mode may add a partial window; the input shape is unknown (pass example_inputs)")
        sizes = tuple(shape)[-rank:]
        require(
            all((n + 2 * p - k) % s == 0 for n, k, s, p in zip(sizes, kernel, stride, padding)),
            "ceil_mode adds a partial window at this input size",
        )
    return then(ctx, arg, avg_pool(kernel, stride, padding), uniform=True, spatial_dims=rank)


@rule(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def avg_pool_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.AvgPoolNd``."""
    module = ctx.module()
    rank = next(r for cls, r in _RANKS.items() if isinstance(module, cls))
    return _pool(
        ctx,
        bind(node, _module_input)["input"],
        rank,
        module.kernel_size,
        module.stride,
        module.padding,
        module.ceil_mode,
        module.count_include_pad,
        getattr(module, "divisor_override", None),
    )


def _avg_pool_function(rank: int):
    def avg_pool_function(node: Node, ctx: RuleContext) -> Value:
        """``F.avg_poolNd(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)``."""
        args = bind(node, _avg_pool_signature)
        constant = {name: ctx.constant(args[name], name) for name in args if name != "input"}
        return _pool(
            ctx,
            args["input"],
            rank,
            constant["kernel_size"],
            constant["stride"],
            constant["padding"],
            constant["ceil_mode"],
            constant["count_include_pad"],
            constant["divisor_override"],
        )

    return avg_pool_function


for _rank, _functions in (
    (1, (F.avg_pool1d, torch.ops.aten.avg_pool1d.default)),
    (2, (F.avg_pool2d, torch.ops.aten.avg_pool2d.default)),
    (3, (F.avg_pool3d, torch.ops.aten.avg_pool3d.default)),
):
    rule(*_functions)(_avg_pool_function(_rank))
