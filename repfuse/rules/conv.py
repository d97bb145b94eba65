"""Convolutions, transposed convolutions and linear layers: each is a map of its input.

Each merges with the map before it (composition) where that is exact and the cost
policy accepts it (see :func:`.common.then`); otherwise it starts a region at its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node

from ..algebra import conv, conv_transpose, linear, require

aten = torch.ops.aten
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


for _rank, _functions in (
    (1, (F.conv1d, aten.conv1d.default, aten.conv1d.padding)),
    (2, (F.conv2d, aten.conv2d.default, aten.conv2d.padding)),
    (3, (F.conv3d, aten.conv3d.default, aten.conv3d.padding)),
):
    rule(*_functions)(_conv_function(_rank))


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


for _rank, _functions in (
    (1, (F.conv_transpose1d, aten.conv_transpose1d.default)),
    (2, (F.conv_transpose2d, aten.conv_transpose2d.input)),
    (3, (F.conv_transpose3d, aten.conv_transpose3d.input)),
):
    rule(*_functions)(_conv_transpose_function(_rank))


def _convolution_signature(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups) -> None: ...


@rule(aten.convolution.default)
def convolution(node: Node, ctx: RuleContext) -> Value:
    """``aten.convolution``: an ordinary or a transposed convolution, as ``transposed`` says."""
    args = bind(node, _convolution_signature)
    constant = {name: ctx.constant(args[name], name) for name in args if name != "input"}
    weight = _weight(ctx, args["weight"], "the weight")
    if constant["transposed"]:
        m = conv_transpose(
            weight,
            constant["bias"],
            constant["stride"],
            constant["padding"],
            constant["output_padding"],
            constant["groups"],
            constant["dilation"],
        )
    else:
        m = conv(weight, constant["bias"], constant["stride"], constant["padding"], constant["dilation"], constant["groups"])
    return then(ctx, args["input"], m, spatial_dims=m.rank or None)


@rule(nn.Linear)
def linear_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.Linear``: a rank-0 map on the last axis."""
    module = ctx.module()
    args = bind(node, _module_input)
    return then(ctx, args["input"], linear(module.weight, module.bias))


@rule(F.linear, aten.linear.default)
def linear_function(node: Node, ctx: RuleContext) -> Value:
    """``F.linear(x, W, b)`` with constant ``W`` and ``b``."""
    args = bind(node, _linear_signature)
    weight = _weight(ctx, args["weight"], "the weight")
    require(weight.dim() == 2, "the weight of F.linear is not a matrix")
    return then(ctx, args["input"], linear(weight, ctx.constant(args["bias"], "the bias")))

