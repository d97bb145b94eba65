"""Per-output-channel affine maps applied after a convolution map.

    scale_shift(M, s, t)(x) = s[o] * M(x)[o] + t[o]
                            = conv(x, s[o] * W[o], s[o] * b[o] + t[o])

Eval-mode BatchNorm is such a map with

    s = gamma / sqrt(running_var + eps),    t = beta - running_mean * s.

These folds are exact for every map, padding mode and transposition: the scale and
shift act on the output, after every border effect has happened.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .convmap import FOLD_DTYPE, ConvMap, Refused, in_fold_dtype

Scalar = float | int


def channel_vector(value: Tensor | Scalar, channels: int, like: Tensor) -> Tensor:
    """``value`` (a scalar or ``channels`` values) as a float64 vector of length ``channels``.

    A float64 vector of that length on ``like``'s device is returned as it is (not copied).
    """
    if isinstance(value, Tensor):
        if value.dtype == FOLD_DTYPE and value.shape == (channels,) and value.device == like.device:
            return value.detach() if value.requires_grad else value
        value = value.detach().to(dtype=FOLD_DTYPE, device=like.device)
        if value.numel() == 1:
            return value.reshape(1).expand(channels).clone()
        if value.numel() != channels:
            raise Refused(f"{value.numel()} per-channel values for {channels} channels")
        return value.reshape(channels)
    return torch.full((channels,), float(value), dtype=FOLD_DTYPE, device=like.device)


def scale_shift(m: ConvMap, scale: Tensor | Scalar | None = None, shift: Tensor | Scalar | None = None) -> ConvMap:
    """``s[o] * M(x)[o] + t[o]``; ``None`` means scale 1 or shift 0."""
    channels = m.out_channels
    weight, bias = m.weight, m.bias
    if bias is not None:
        bias = in_fold_dtype(bias)
    if scale is not None:
        s = channel_vector(scale, channels, weight)
        # A float64 copy scaled in place: arithmetic between float32 and float64
        # tensors takes a slow path in torch, ten times slower than the conversion.
        weight = weight.to(FOLD_DTYPE, memory_format=torch.contiguous_format, copy=True)
        if m.transposed:
            # conv_transpose weight: [C_in, C_out/G, *k]; output channel o = g*(C_out/G) + j.
            in_channels, per_group = weight.shape[0], weight.shape[1]
            grouped = weight.view(m.groups, in_channels // m.groups, per_group, -1)
            grouped.mul_(s.view(m.groups, 1, per_group, 1))
        else:
            weight.mul_(s.view((channels,) + (1,) * (weight.dim() - 1)))
        if bias is not None:
            bias = bias * s
    if shift is not None:
        t = channel_vector(shift, channels, weight)
        bias = t if bias is None else bias + t
    return m.with_(weight=weight, bias=bias)


def batch_norm_scale_shift(
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``(s, t)``: ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``."""
    gamma = running_var.new_ones(()) if weight is None else weight
    beta = running_var.new_zeros(()) if bias is None else bias
    # Detached: the statistics may be parameters, and their fold is a constant.
    statistics = [t.detach() if t.requires_grad else t for t in (running_mean, running_var, gamma, beta)]
    if any(t.shape != running_var.shape for t in statistics):
        statistics = torch.broadcast_tensors(*statistics)
    mean, var, gamma, beta = torch.stack(statistics).to(FOLD_DTYPE).unbind()
    scale = var.add_(eps).rsqrt_().mul_(gamma)  # ``var`` is a row of a new tensor
    return scale, torch.addcmul(beta, mean, scale, value=-1)


def batch_norm_scale_shifts(
    statistics: Sequence[tuple[Tensor, Tensor, float, Tensor | None, Tensor | None]],
) -> list[tuple[Tensor, Tensor]]:
    """:func:`batch_norm_scale_shift` of many BatchNorms, with a few tensor ops for all of them.

    ``statistics`` holds ``(running_mean, running_var, eps, weight, bias)`` per
    BatchNorm, each tensor one-dimensional with one entry per channel, all on one
    device.  The results are views of two new float64 tensors.
    """
    if not statistics:
        return []
    sizes = [mean.numel() for mean, *_ in statistics]
    columns = [[], [], [], []]
    for mean, var, _, weight, bias in statistics:
        columns[0].append(mean)
        columns[1].append(var)
        columns[2].append(var.new_ones(var.shape) if weight is None else weight)
        columns[3].append(var.new_zeros(var.shape) if bias is None else bias)
    with torch.no_grad():  # the statistics may be parameters; their fold is a constant
        mean, var, gamma, beta = torch.stack([torch.cat(column) for column in columns]).to(FOLD_DTYPE).unbind()
        eps = torch.tensor([eps for _, _, eps, _, _ in statistics], dtype=FOLD_DTYPE, device=var.device)
        scale = var.add_(eps.repeat_interleave(torch.tensor(sizes, device=var.device))).rsqrt_().mul_(gamma)
        shift = torch.addcmul(beta, mean, scale, value=-1)
    return list(zip(scale.split(sizes), shift.split(sizes)))


def fold_batch_norm(
    m: ConvMap,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> ConvMap:
    """``BN(M(x))`` for an eval-mode BatchNorm over ``M``'s output channels."""
    if running_mean.numel() != m.out_channels:
        raise Refused(f"BatchNorm has {running_mean.numel()} features but its input has {m.out_channels} channels")
    return scale_shift(m, *batch_norm_scale_shift(running_mean, running_var, eps, weight, bias))
