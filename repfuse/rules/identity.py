"""Ops that return their input: ``nn.Identity`` and dropout in eval mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from ..algebra import require
from ..value import Value
from .registry import RuleContext, bind, rule


def _module_input(input) -> None: ...


def passthrough(ctx: RuleContext, arg) -> Value:
    """This node's value when it returns its argument as it is."""
    value = ctx.value(arg)
    return ctx.make(value.form, (value,), cost=value.cost, uniform=value.uniform, fold=True)


@rule(nn.Identity)
def identity_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.Identity()(x) = x``."""
    return passthrough(ctx, bind(node, _module_input)["input"])


@rule(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
def dropout_module(node: Node, ctx: RuleContext) -> Value:
    """Dropout in eval mode is the identity."""
    require(not ctx.module().training, "dropout in training mode is random")
    return passthrough(ctx, bind(node, _module_input)["input"])


@rule(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
def dropout_function(node: Node, ctx: RuleContext) -> Value:
    """``F.dropout(x, p, training=False)`` is the identity."""
    args = bind(node, node.target)
    require(ctx.constant(args["training"], "training") is False, "dropout with training=True is random")
    return passthrough(ctx, args["input"])


def _aten_dropout_signature(input, p, train) -> None: ...


def _clone_signature(input, *, memory_format=None) -> None: ...


@rule(torch.ops.aten.dropout.default)
def aten_dropout(node: Node, ctx: RuleContext) -> Value:
    """``aten.dropout(x, p, train=False)`` is the identity."""
    args = bind(node, _aten_dropout_signature)
    require(ctx.constant(args["train"], "train") is False, "dropout with train=True is random")
    return passthrough(ctx, args["input"])


@rule(torch.ops.aten.clone.default)
def clone(node: Node, ctx: RuleContext) -> Value:
    """``aten.clone(x)`` has the values of ``x``."""
    return passthrough(ctx, bind(node, _clone_signature)["input"])
