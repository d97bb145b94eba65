"""Convolutions, transposed convolutions and linear layers: each is a map of its input.

Each merges with the map before it (composition) where that is exact and the cost
policy accepts it (see :func:`.common.then`); otherwise it starts a region at its input.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node

from ..algebra import conv, conv_transpose, linear, require
from ..value import Value
from .common import then
from .registry import RuleContext, bind, rule


def _module_input(input) -> None: ...


def _conv_signature(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> None: ...


def _conv_transpose_signature(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
) -> None: ...


def _linear_signature(input, weight, bias=None) -> None: ...


def _conv_transpose_module_signature(input, output_size=None) -> None: ...


def _weight(ctx: RuleContext, arg, what: str, rank: int | None = None) -> Tensor:
    tensor = ctx.constant(arg, what)
    require(isinstance(tensor, Tensor), f"{what} is not a tensor")
    if rank is not None:
        require(tensor.dim() == rank + 2, f"{what} has {tensor.dim()} dims for a {rank}-d convolution")
    return tensor


@rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.ConvNd``: ``conv(x, W, b)`` with the module's geometry and padding mode."""
    module = ctx.module()
    args = bind(node, _module_input)
    m = conv(
        module.weight, module.bias, module.stride, module.padding, module.dilation, module.groups, module.padding_mode
    )
    return then(ctx, args["input"], m, spatial_dims=m.rank or None)


def _conv_function(rank: int):
    def conv_function(node: Node, ctx: RuleContext) -> Value:
        """``F.convNd(x, W, b, stride, padding, dilation, groups)`` with constant ``W`` and ``b``."""
        args = bind(node, _conv_signature)
        weight = _weight(ctx, args["weight"], "the weight", rank)
        bias = ctx.constant(args["bias"], "the bias")
        m = conv(
            weight,
            bias,
            ctx.constant(args["stride"], "the stride"),
            ctx.constant(args["padding"], "the padding"),
            ctx.constant(args["dilation"], "the dilation"),
            ctx.constant(args["groups"], "groups"),
        )
        return then(ctx, args["input"], m, spatial_dims=m.rank or None)

    return conv_function


for _rank, _function in ((1, F.conv1d), (2, F.conv2d), (3, F.conv3d)):
    rule(_function)(_conv_function(_rank))


@rule(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.ConvTransposeNd`` with a fixed ``output_padding``."""
    module = ctx.module()
    args = bind(node, _conv_transpose_module_signature)
    require(args["output_size"] is None, "output_size is given at run time, so output_padding is not fixed")
    m = conv_transpose(
        module.weight,
        module.bias,
        module.stride,
        module.padding,
        module.output_padding,
        module.groups,
        module.dilation,
    )
    return then(ctx, args["input"], m, spatial_dims=m.rank or None)


def _conv_transpose_function(rank: int):
    def conv_transpose_function(node: Node, ctx: RuleContext) -> Value:
        """``F.conv_transposeNd(x, W, b, stride, padding, output_padding, groups, dilation)``."""
        args = bind(node, _conv_transpose_signature)
        weight = _weight(ctx, args["weight"], "the weight", rank)
        m = conv_transpose(
            weight,
            ctx.constant(args["bias"], "the bias"),
            ctx.constant(args["stride"], "the stride"),
            ctx.constant(args["padding"], "the padding"),
            ctx.constant(args["output_padding"], "the output padding"),
            ctx.constant(args["groups"], "groups"),
            ctx.constant(args["dilation"], "the dilation"),
        )
        return then(ctx, args["input"], m, spatial_dims=m.rank or None)

    return conv_transpose_function


for _rank, _function in ((1, F.conv_transpose1d), (2, F.conv_transpose2d), (3, F.conv_transpose3d)):
    rule(_function)(_conv_transpose_function(_rank))


@rule(nn.Linear)
def linear_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.Linear``: a rank-0 map on the last axis."""
    module = ctx.module()
    args = bind(node, _module_input)
    return then(ctx, args["input"], linear(module.weight, module.bias))


@rule(F.linear)
def linear_function(node: Node, ctx: RuleContext) -> Value:
    """``F.linear(x, W, b)`` with constant ``W`` and ``b``."""
    args = bind(node, _linear_signature)
    weight = _weight(ctx, args["weight"], "the weight")
    require(weight.dim() == 2, "the weight of F.linear is not a matrix")
    return then(ctx, args["input"], linear(weight, ctx.constant(args["bias"], "the bias")))

