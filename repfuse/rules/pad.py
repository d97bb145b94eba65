"""Padding: ``F.pad`` and the padding modules, with zeros, reflect, replicate or circular.

A pad of the last ``k`` spatial dims is a uniform 1-tap map with that padding; it merges
into the convolution after it (see :func:`repfuse.algebra.compose` for when that is
exact).  Padding with a constant other than 0 is not a convolution of the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from ..algebra import pad, require
from ..value import Value
from .common import then
from .registry import RuleContext, bind, rule

aten = torch.ops.aten
_MODES = {"constant": "zeros", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
_MODULE_MODES = (
    (nn.ReflectionPad1d, "reflect"),
    (nn.ReflectionPad2d, "reflect"),
    (nn.ReflectionPad3d, "reflect"),
    (nn.ReplicationPad1d, "replicate"),
    (nn.ReplicationPad2d, "replicate"),
    (nn.ReplicationPad3d, "replicate"),
    (nn.CircularPad1d, "circular"),
    (nn.CircularPad2d, "circular"),
    (nn.CircularPad3d, "circular"),
)


def _module_input(input) -> None: ...


def _pad_signature(input, pad, mode="constant", value=None) -> None: ...


def _padded(ctx: RuleContext, arg, amounts, mode: str, value) -> Value:
    """``F.pad(arg, amounts, mode, value)``; ``amounts`` as ``F.pad`` takes them (last dim first)."""
    require(mode in _MODES, f"unknown padding mode {mode!r}")
    require(mode != "constant" or value in (None, 0, 0.0), f"padding with the constant {value} is not a convolution")
    amounts = [int(a) for a in amounts]
    require(len(amounts) % 2 == 0, "F.pad takes an even number of amounts")
    pairs = [(amounts[i], amounts[i + 1]) for i in range(0, len(amounts), 2)][::-1]
    return then(ctx, arg, pad(pairs, _MODES[mode]), uniform=True, convolves=False)


@rule(F.pad, aten.pad.default)
def pad_function(node: Node, ctx: RuleContext) -> Value:
    """``F.pad(x, pad, mode, value)``."""
    args = bind(node, _pad_signature)
    return _padded(
        ctx,
        args["input"],
        ctx.constant(args["pad"], "the padding"),
        ctx.constant(args["mode"], "the padding mode"),
        ctx.constant(args["value"], "the padding value"),
    )


@rule(nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
def constant_pad_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.ConstantPadNd`` (and ``nn.ZeroPadNd``, its subclass) with value 0."""
    module = ctx.module()
    return _padded(ctx, bind(node, _module_input)["input"], module.padding, "constant", module.value)


@rule(*(cls for cls, _ in _MODULE_MODES))
def mode_pad_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.ReflectionPadNd``, ``nn.ReplicationPadNd``, ``nn.CircularPadNd``."""
    module = ctx.module()
    mode = next(m for cls, m in _MODULE_MODES if isinstance(module, cls))
    return _padded(ctx, bind(node, _module_input)["input"], module.padding, mode, None)


def _constant_pad_signature(input, pad, value=0) -> None: ...


def _mode_pad_signature(input, padding) -> None: ...


_ATEN_MODES = {
    **dict.fromkeys((aten.reflection_pad1d.default, aten.reflection_pad2d.default, aten.reflection_pad3d.default), "reflect"),
    **dict.fromkeys(
        (aten.replication_pad1d.default, aten.replication_pad2d.default, aten.replication_pad3d.default), "replicate"
    ),
    aten._pad_circular.default: "circular",
}


@rule(aten.constant_pad_nd.default)
def constant_pad_nd(node: Node, ctx: RuleContext) -> Value:
    """``aten.constant_pad_nd(x, pad, value)``."""
    args = bind(node, _constant_pad_signature)
    return _padded(ctx, args["input"], ctx.constant(args["pad"], "the padding"), "constant", ctx.constant(args["value"], "the padding value"))


@rule(*_ATEN_MODES)
def mode_pad_function(node: Node, ctx: RuleContext) -> Value:
    """ATen's reflection, replication and circular pads."""
    args = bind(node, _mode_pad_signature)
    return _padded(ctx, args["input"], ctx.constant(args["padding"], "the padding"), _ATEN_MODES[node.target], None)
