"""Running a map on a tensor: the reference semantics of :class:`ConvMap`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .convmap import ConvMap
from .groups import expand_groups

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def torch_padding(padding: tuple[tuple[int, int], ...]) -> list[int]:
    """Per-dim ``(lo, hi)`` pairs in ``F.pad``'s order (last dim first)."""
    return [p for lo_hi in reversed(padding) for p in lo_hi]


def apply(m: ConvMap, x: Tensor) -> Tensor:
    """``m(x)`` computed with ``torch.nn.functional``, in ``x``'s dtype."""
    weight = m.weight.to(x.dtype)
    bias = None if m.bias is None else m.bias.to(x.dtype)
    if m.rank == 0:
        dense = expand_groups(m, 1).weight.to(x.dtype)
        return F.linear(x, dense, bias)
    if m.transposed:
        return _CONV_TRANSPOSE[m.rank](
            x, weight, bias, m.stride, [lo for lo, _ in m.padding], m.output_padding, m.groups, m.dilation
        )
    if m.reads_padding:
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        x = F.pad(x, torch_padding(m.padding), mode=mode)
    return _CONV[m.rank](x, weight, bias, m.stride, 0, m.dilation, m.groups)
