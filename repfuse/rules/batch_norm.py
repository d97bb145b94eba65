"""Eval-mode BatchNorm: a per-channel affine map, folded into the map before it.

    BN(M(x)) = scale_shift(M, gamma / sqrt(var + eps), beta - mean * gamma / sqrt(var + eps))(x)

Preconditions: running statistics exist and are used (``track_running_stats=True``
and eval mode, or ``F.batch_norm(training=False)``), and the channels BatchNorm
normalises (dim 1) are the map's output channels (dim ``-(rank + 1)``), which holds
exactly when the tensor has ``rank + 2`` dims.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node

import operator

import torch

from ..algebra import (
    Refused,
    batch_norm_scale_shift,
    batch_norm_scale_shifts,
    elementwise_cost,
    pending_scale_shift,
    require,
)
from ..value import Value
from .common import as_channels, value_ndim
from .identity import passthrough
from .registry import Opaque, RuleContext, bind, rule

aten = torch.ops.aten

# The input ranks each BatchNorm class accepts.
_NDIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


def _module_input(input) -> None: ...


def _batch_norm_signature(
    input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
) -> None: ...


def fold(
    ctx: RuleContext,
    value: Value,
    mean: Tensor,
    var: Tensor,
    eps: float,
    weight: Tensor | None,
    bias: Tensor | None,
    ndims: tuple[int, ...] | None = None,
    scale_and_shift: tuple[Tensor, Tensor] | None = None,
) -> Value:
    """The value of ``BN(value)``; ``ndims`` are the input ranks the op accepts (None: any).

    ``scale_and_shift`` is :func:`batch_norm_scale_shift` of these statistics where
    it was computed already (see :func:`batch_norm_modules`).
    """
    scale, shift = scale_and_shift or batch_norm_scale_shift(mean, var, eps, weight, bias)
    channels = mean.numel()
    ndim = value_ndim(ctx, value)
    if ndim is None and ndims is not None and len(ndims) == 1:
        ndim = ndims[0]
    if not (ndims is None or ndim is None or ndim in ndims):
        raise Refused(f"BatchNorm reads {ndims}-D tensors, not {ndim}-D")
    if value.uniform:
        if ndim is None:
            raise Refused("the rank of BatchNorm's input is unknown (pass example_inputs)")
        m, base = as_channels(value, channels, ndim - 2)
    else:
        rank = value.geometry.rank
        if ndim is None:
            raise Refused(
                "BatchNorm1d after a linear layer folds only on 2-D input, and this input's rank "
                "is unknown (pass example_inputs)"
            )
        if ndim != rank + 2:
            raise Refused(
                f"BatchNorm normalises dim 1, but the channels of the {ndim}-D tensor it reads are on dim {ndim - rank - 1}"
            )
        if channels != value.geometry.out_channels:
            raise Refused(
                f"BatchNorm has {channels} features but its input has {value.geometry.out_channels} channels"
            )
        m, base = value.form, value.cost
    return ctx.make(pending_scale_shift(m, scale, shift), (value,), cost=base + elementwise_cost(channels), fold=True)


def batch_norm_modules(modules: list[nn.Module]) -> dict[nn.Module, tuple[Tensor, Tensor]]:
    """The folded scale and shift of every BatchNorm module with running statistics, computed at once.

    Modules whose statistics are not one vector each, on the device of the rest, are
    left to their own fold.
    """
    ready, statistics = [], []
    for module in modules:
        mean, var, weight, bias = module.running_mean, module.running_var, module.weight, module.bias
        if mean is None or var is None or var.dim() != 1:
            continue
        if any(t is not None and t.shape != var.shape for t in (mean, weight, bias)):
            continue
        ready.append(module)
        statistics.append((mean, var, module.eps, weight, bias))
    if len({var.device for _, var, _, _, _ in statistics}) != 1:
        return {}
    return dict(zip(ready, batch_norm_scale_shifts(statistics)))


@rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, prepare=batch_norm_modules)
def batch_norm_module(node: Node, ctx: RuleContext) -> Value:
    """``nn.BatchNormNd`` in eval mode with running statistics."""
    module = ctx.module()
    require(
        module.running_mean is not None and module.running_var is not None,
        "BatchNorm has no running statistics (track_running_stats=False): it normalises with batch statistics",
    )
    require(not module.training, "BatchNorm is in training mode: it normalises with batch statistics")
    ndims = next(n for cls, n in _NDIMS.items() if isinstance(module, cls))
    args = bind(node, _module_input)
    return fold(
        ctx,
        ctx.value(args["input"]),
        module.running_mean,
        module.running_var,
        module.eps,
        module.weight,
        module.bias,
        ndims,
        ctx.prepared(),
    )


def _aten_batch_norm_signature(
    input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled
) -> None: ...


def _legit_no_training_signature(input, weight, bias, running_mean, running_var, momentum, eps) -> None: ...


def _getitem_signature(container, index) -> None: ...


@rule(F.batch_norm, aten.batch_norm.default)
def batch_norm_function(node: Node, ctx: RuleContext) -> Value:
    """``F.batch_norm(x, mean, var, weight, bias, training=False, momentum, eps)`` and ATen's."""
    signature = _aten_batch_norm_signature if node.target is aten.batch_norm.default else _batch_norm_signature
    args = bind(node, signature)
    require(
        ctx.constant(args["training"], "training") is False,
        "F.batch_norm with training=True normalises with batch statistics",
    )
    mean = ctx.constant(args["running_mean"], "the running mean")
    var = ctx.constant(args["running_var"], "the running variance")
    require(
        isinstance(mean, Tensor) and isinstance(var, Tensor),
        "F.batch_norm without running statistics normalises with batch statistics",
    )
    return fold(
        ctx,
        ctx.value(args["input"]),
        mean,
        var,
        float(ctx.constant(args["eps"], "eps")),
        ctx.constant(args["weight"], "the weight"),
        ctx.constant(args["bias"], "the bias"),
    )


@rule(aten._native_batch_norm_legit_no_training.default)
def batch_norm_no_training(node: Node, ctx: RuleContext) -> Value:
    """ATen's eval-mode BatchNorm; its value is that of output 0 (outputs 1 and 2 are empty)."""
    args = bind(node, _legit_no_training_signature)
    return fold(
        ctx,
        ctx.value(args["input"]),
        ctx.constant(args["running_mean"], "the running mean"),
        ctx.constant(args["running_var"], "the running variance"),
        float(ctx.constant(args["eps"], "eps")),
        ctx.constant(args["weight"], "the weight"),
        ctx.constant(args["bias"], "the bias"),
    )


@rule(operator.getitem)
def first_output(node: Node, ctx: RuleContext) -> Value:
    """``outputs[0]`` of an op whose value is that of its first output."""
    args = bind(node, _getitem_signature)
    source = args["container"]
    if not (
        isinstance(source, Node)
        and source.target is aten._native_batch_norm_legit_no_training.default
        and args["index"] == 0
    ):
        raise Opaque()
    return passthrough(ctx, source)
