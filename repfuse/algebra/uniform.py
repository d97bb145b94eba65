"""Maps that treat every channel alike: identity, scalar affine, padding, average pooling.

Such a map has one input and one output channel; ``depthwise(M, C)`` applies it to each
of ``C`` channels (``groups = C``).  A uniform map of rank ``k`` acts on the last ``k``
spatial dims; ``lift_rank`` prepends 1-tap dims so that it acts on ``r >= k`` dims.
Rank 0 is then an elementwise affine map, valid on any rank.

    pad(x, (lo, hi), mode)                = conv(x, [1], padding=(lo, hi), mode)
    avg_pool(x, k, s, p), zero padding    = conv(x, 1/prod(k), stride s, padding p)
        counting the padded zeros (count_include_pad=True, no divisor_override)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .convmap import FOLD_DTYPE, ConvMap, require


def scalar_affine(scale: float = 1.0, shift: float = 0.0, device=None) -> ConvMap:
    """``y = scale * x + shift``, elementwise (rank 0, one channel)."""
    weight = torch.full((1, 1), float(scale), dtype=FOLD_DTYPE, device=device)
    bias = None if shift == 0 else torch.full((1,), float(shift), dtype=FOLD_DTYPE, device=device)
    return ConvMap(weight, bias, (), (), ())


def is_identity(m: ConvMap) -> bool:
    """Whether ``m`` is ``y = x`` (1-tap weight 1, no bias, stride 1, no padding)."""
    return (
        m.weight.numel() == 1
        and m.weight.item() == 1
        and not m.has_bias
        and not m.transposed
        and all(s == 1 for s in m.stride)
        and not m.reads_padding
    )


def lift_rank(m: ConvMap, rank: int) -> ConvMap:
    """``m`` acting on the last ``m.rank`` of ``rank`` spatial dims (1-tap on the others)."""
    extra = rank - m.rank
    require(extra >= 0, f"a map over {m.rank} spatial dims cannot act on {rank}")
    if extra == 0:
        return m
    return m.with_(
        weight=m.weight.reshape(m.weight.shape[:2] + (1,) * extra + m.kernel_size),
        stride=(1,) * extra + m.stride,
        padding=((0, 0),) * extra + m.padding,
        dilation=(1,) * extra + m.dilation,
        output_padding=((0,) * extra + m.output_padding) if m.transposed else m.output_padding,
    )


def depthwise(m: ConvMap, channels: int) -> ConvMap:
    """The one-channel map ``m`` applied to each of ``channels`` channels alike."""
    require(m.in_channels == 1 and m.out_channels == 1, "only a one-channel map applies to every channel")
    weight = m.weight.expand((channels,) + m.weight.shape[1:]).contiguous()
    bias = None if m.bias is None else m.bias.expand(channels).contiguous()
    return m.with_(weight=weight, bias=bias, groups=channels)


def pad(padding: Sequence[tuple[int, int]], mode: str = "zeros") -> ConvMap:
    """``F.pad`` of the last ``len(padding)`` spatial dims (first dim first), one channel."""
    require(all(lo >= 0 and hi >= 0 for lo, hi in padding), "negative padding (cropping) is not merged")
    rank = len(padding)
    weight = torch.ones((1, 1) + (1,) * rank, dtype=FOLD_DTYPE)
    reads = any(lo or hi for lo, hi in padding)
    return ConvMap(weight, None, (1,) * rank, tuple(padding), (1,) * rank, 1, mode if reads else "zeros")


def avg_pool(kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> ConvMap:
    """Average pooling that counts padded zeros: a convolution with weight ``1/prod(k)``."""
    rank = len(kernel_size)
    weight = torch.full((1, 1) + tuple(kernel_size), 1.0 / math.prod(kernel_size), dtype=FOLD_DTYPE)
    return ConvMap(weight, None, tuple(stride), tuple((p, p) for p in padding), (1,) * rank)
