"""Sums of maps on one input (branches) and maps in sequence (composition).

Sum.  ``(A + B)(x) = conv(x, embed(W_A) + embed(W_B), b_A + b_B)`` over the common
window of A and B (see :mod:`.window`), after both are written with the greatest
common divisor of their groups (see :mod:`.groups`).  Exact when the strides are
equal, the extents are equal, the taps share a lattice, and the branches that read
padding read the same padding mode.  A sum may be checked now and computed later
(:func:`pending_sum`), so that a chain of additions makes one new kernel, not one
per addition.

Composition.  Applying A then B (``B(A(x))``), output ``i`` of the composite reads

    i*s_A*s_B - (p_B*s_A + p_A) + j*d_B*s_A + t*d_A      for taps j of B and t of A,

so it is one convolution with stride ``s_A*s_B``, padding ``p_B*s_A + p_A`` and the
full correlation of the kernels on the lattice ``gcd(d_B*s_A, d_A)``; its bias is
``b_B + sum_j W_B[:, :, j] @ b_A``.  Exact when B reads no padding, or when A is
1-tap with stride 1 and B's padding of A's output is A of a padded input: A reads no
padding and B pads with reflect, replicate or circular (they commute with a
per-position map), or A has no bias and both pad with zeros (B's zeros are A's zeros).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .affine import channel_vector, scale_shift
from .convmap import FOLD_DTYPE, ConvMap, Refused, in_fold_dtype, require
from .groups import expand_groups
from .window import Window, common_window, embed, padding_mode_of, placement, window_mode


def as_forward(m: ConvMap) -> ConvMap:
    """A stride-1 transposed map as the ordinary convolution it equals.

    ``conv_transpose(x, W, s=1, p, d, output_padding=q)`` is ``conv`` with the kernel
    flipped and its in/out axes swapped per group, padding ``((k-1)d - p, (k-1)d - p + q)``
    and the same dilation; it needs ``p <= (k-1)d``.
    """
    if not m.transposed:
        return m
    require(
        all(s == 1 for s in m.stride),
        f"a transposed convolution with stride {m.stride} is not a convolution of its input",
    )
    padding = []
    for (p, _), k, d, q in zip(m.padding, m.kernel_size, m.dilation, m.output_padding):
        reach = (k - 1) * d
        require(p <= reach, "a transposed convolution that crops more than its kernel reaches")
        padding.append((reach - p, reach - p + q))
    in_per_group = m.weight.shape[0] // m.groups
    out_per_group = m.weight.shape[1]
    kernel = m.kernel_size
    grouped = m.weight.reshape(m.groups, in_per_group, out_per_group, *kernel).transpose(1, 2)
    weight = grouped.reshape(m.out_channels, in_per_group, *kernel).flip(list(range(2, 2 + m.rank)))
    return ConvMap(
        weight.contiguous(),
        m.bias,
        m.stride,
        tuple(padding),
        m.dilation,
        m.groups,
    )


def _require_padding_commutes(first: ConvMap, second: ConvMap) -> None:
    """Where ``second`` pads ``first``'s output, require that this equals ``first`` of a padded input.

    True when ``first`` is 1-tap with stride 1 (it then acts on each position alone)
    and either (a) it reads no padding and ``second`` pads with reflect, replicate or
    circular, which commute with a per-position map, or (b) it has no bias, so its
    zeros are zeros, and both pad with zeros (or both replicate).
    """
    require(
        not first.transposed
        and all(k == 1 for k in first.kernel_size)
        and all(s == 1 for s in first.stride),
        "the second convolution pads the first one's output, which is not the first applied "
        "to a padded input unless the first is 1-tap with stride 1",
    )
    if not first.reads_padding and second.padding_mode != "zeros":
        return
    require(
        not first.has_bias,
        "zero padding after a biased op: the padded zeros are not the op applied to zeros"
        if second.padding_mode == "zeros"
        else f"{second.padding_mode} padding of a padded, biased result",
    )
    require(
        not first.reads_padding or (first.padding_mode == second.padding_mode in ("zeros", "replicate")),
        f"{second.padding_mode} padding of a result padded with {first.padding_mode}",
    )


def _sum_layout(maps: Sequence[ConvMap]) -> tuple[list[ConvMap], Window, str, int, list[tuple[slice, ...]]]:
    """The branches as convolutions, their common window, padding mode and groups, and
    where each one's taps go; refuses branches that do not sum to one convolution."""
    maps = [as_forward(m) for m in maps]
    first = maps[0]
    for m in maps[1:]:
        if m.in_channels != first.in_channels:
            raise Refused(f"branches read {first.in_channels} and {m.in_channels} channels")
        if m.out_channels != first.out_channels:
            raise Refused(f"branches produce {first.out_channels} and {m.out_channels} channels")
    window = common_window(maps)
    mode = padding_mode_of(maps)
    groups = math.gcd(*(m.groups for m in maps))
    return maps, window, mode, groups, [placement(m, window, mode) for m in maps]


def sum_maps(maps: Sequence[ConvMap]) -> ConvMap:
    """``sum_k M_k(x)``: one convolution computing the sum of branches on one input."""
    return weighted_sum(maps, [None] * len(maps))


def weighted_sum(maps: Sequence[ConvMap], scales: Sequence[Tensor | None], shift: Tensor | None = None) -> ConvMap:
    """``sum_k s_k[o] * M_k(x)[o] + t[o]`` as one convolution (``s_k``: float64 vectors or ``None`` for 1).

    Each kernel is added into the sum's float64 kernel scaled as it is read: no scaled
    copy of it is made.
    """
    maps, window, mode, groups, slices = _sum_layout(maps)
    first = maps[0]
    whole = [m.kernel_size == window.kernel_size and m.groups == groups for m in maps]
    start = whole.index(True) if any(whole) else None  # a term that fills the kernel: it starts the sum
    if start is None:
        shape = (first.out_channels, first.in_channels // groups) + window.kernel_size
        weight = first.weight.new_zeros(shape, dtype=FOLD_DTYPE)
    elif scales[start] is None:
        weight = maps[start].weight.to(FOLD_DTYPE, memory_format=torch.contiguous_format, copy=True)
    else:
        weight = _scaled(maps[start].weight, scales[start])
    bias = None if shift is None else shift.to(FOLD_DTYPE, copy=True)
    for index, (m, scale, where) in enumerate(zip(maps, scales, slices)):
        if index != start:
            add_regrouped(weight, groups, m, where, scale)
        if m.bias is not None:
            contribution = m.bias if scale is None else in_fold_dtype(m.bias) * scale
            bias = contribution.to(FOLD_DTYPE, copy=True) if bias is None else bias.add_(contribution)
    return ConvMap(weight, bias, first.stride, window.padding, window.dilation, groups, window_mode(window, mode))


def _scaled(weight: Tensor, scale: Tensor) -> Tensor:
    """``s[o] * W[o]`` as a new contiguous float64 tensor (one new tensor: scaled in place)."""
    result = weight.to(FOLD_DTYPE, memory_format=torch.contiguous_format, copy=True)
    return result.mul_(scale.view((-1,) + (1,) * (weight.dim() - 1)))


#: Output channels are added a slice at a time, of about this many elements: arithmetic
#: on a float32 kernel and a float64 one makes a float64 copy of what it reads, and this
#: keeps that copy small next to the kernels.
_SLICE_ELEMENTS = 1 << 16


@dataclass(frozen=True, eq=False)
class PendingSum:
    """``sum_k s_k[o] * M_k(x)[o] + t[o]``, checked but not yet computed.

    ``terms`` are the maps ``M_k``, ``scales`` their per-output-channel float64 scales
    (``None``: 1) and ``shift`` a float64 vector (``None``: 0).  ``geometry`` is a map
    with the result's channels, kernel, stride, padding and groups; its weight's values
    are not the result's and are never read (it may live on the meta device).

    A chain of additions ``((a + b) + c) + d``, and BatchNorms folded into convolutions
    on the way, become one pending sum, computed once by :meth:`evaluate`: one new
    float64 kernel for the whole region instead of one per fold and per ``+``.
    """

    terms: tuple[ConvMap, ...]
    scales: tuple[Tensor | None, ...]
    shift: Tensor | None
    geometry: ConvMap

    @staticmethod
    def of(form: "ConvMap | PendingSum") -> "PendingSum":
        """``form`` as a pending sum (a map is a sum of one term)."""
        return form if isinstance(form, PendingSum) else PendingSum((form,), (None,), None, form)

    def evaluate(self) -> ConvMap:
        if len(self.terms) == 1 and self.terms[0].transposed:  # kept transposed: it may be strided
            return scale_shift(self.terms[0], self.scales[0], self.shift)
        return weighted_sum(self.terms, self.scales, self.shift)


def pending_sum(operands: Sequence[ConvMap | PendingSum]) -> PendingSum:
    """The sum of ``operands`` (maps, or sums not yet computed), checked as :func:`sum_maps` checks it."""
    pending = [PendingSum.of(o) for o in operands]
    shapes, window, mode, groups, _ = _sum_layout([p.geometry for p in pending])
    first = shapes[0]
    geometry = ConvMap(
        _shape_only(first, (first.out_channels, first.in_channels // groups) + window.kernel_size),
        None,
        first.stride,
        window.padding,
        window.dilation,
        groups,
        window_mode(window, mode),
    )
    shifts = [p.shift for p in pending if p.shift is not None]
    return PendingSum(
        tuple(t for p in pending for t in p.terms),
        tuple(s for p in pending for s in p.scales),
        sum(shifts[1:], shifts[0]) if shifts else None,
        geometry,
    )


def pending_scale_shift(
    form: ConvMap | PendingSum, scale: Tensor | float | None = None, shift: Tensor | float | None = None
) -> PendingSum:
    """``s[o] * F(x)[o] + t[o]`` of a map or pending sum (as :func:`~.affine.scale_shift`), computed later."""
    pending = PendingSum.of(form)
    channels, like = pending.geometry.out_channels, pending.terms[0].weight
    scales, total = pending.scales, pending.shift
    if scale is not None:
        s = channel_vector(scale, channels, like)
        scales = tuple(s if k is None else k * s for k in scales)
        total = None if total is None else total * s
    if shift is not None:
        t = channel_vector(shift, channels, like)
        total = t if total is None else total + t
    return PendingSum(pending.terms, scales, total, pending.geometry)


def _shape_only(m: ConvMap, shape: tuple[int, ...]) -> torch.Tensor:
    """A weight of ``shape`` without values: ``m``'s own where it has that shape (it is not read)."""
    if tuple(m.weight.shape) == shape:
        return m.weight
    return torch.empty(shape, dtype=FOLD_DTYPE, device="meta")


def add_regrouped(
    weight: Tensor, groups: int, m: ConvMap, where: tuple[slice, ...], scale: Tensor | None = None
) -> None:
    """``weight[:, :, where] += s[o] * expand_groups(m, groups).weight``, without building the expansion.

    Old group ``r`` of each new group lands on the block diagonal: a view of ``weight``
    as ``[G', G/G', C_out/G, G/G', C_in/G, *k]`` whose diagonal over the two ``G/G'`` axes
    receives ``m``'s weight.  ``scale`` (``None``: 1) is per output channel.
    """
    ratio = m.groups // groups
    out_per_group, in_per_group = m.out_channels // m.groups, m.weight.shape[1]
    target = weight[(slice(None), slice(None), *where)]
    if ratio == 1:
        source = m.weight
        scale = None if scale is None else scale.view((-1,) + (1,) * (source.dim() - 1))
        rows = max(1, _SLICE_ELEMENTS // max(1, source[0].numel()))
        for first in range(0, source.shape[0], rows):
            part = slice(first, first + rows)
            if scale is None:
                target[part] += source[part]
            else:
                target[part].addcmul_(source[part], scale[part])
        return
    blocks = target.view(groups, ratio, out_per_group, ratio, in_per_group, *target.shape[2:])
    diagonal = torch.diagonal(blocks, dim1=1, dim2=3)  # [G', C_out/G, C_in/G, *k, G/G']
    source = in_fold_dtype(m.weight).view(groups, ratio, out_per_group, in_per_group, *m.kernel_size)
    source = source.movedim(1, -1)
    if scale is not None:
        per_channel = scale.view(groups, ratio, out_per_group).movedim(1, -1)  # [G', C_out/G, G/G']
        source = source * per_channel.reshape(groups, out_per_group, *(1,) * (m.rank + 1), ratio)
    diagonal += source


def add(a: ConvMap, b: ConvMap) -> ConvMap:
    """``A(x) + B(x)``."""
    return sum_maps([a, b])


def compose(first: ConvMap, second: ConvMap) -> ConvMap:
    """``second(first(x))`` as one convolution of ``x``."""
    first, second = as_forward(first), as_forward(second)
    require(
        first.rank == second.rank,
        f"a rank-{first.rank} map feeds a rank-{second.rank} map",
    )
    require(
        first.out_channels == second.in_channels,
        f"{first.out_channels} channels feed a map that reads {second.in_channels}",
    )
    if second.reads_padding:
        _require_padding_commutes(first, second)
        mode = second.padding_mode
    else:
        mode = first.padding_mode

    rank = first.rank
    stride, padding, dilation, kernel = [], [], [], []
    starts, steps = [], []
    for dim in range(rank):
        s_a, s_b = first.stride[dim], second.stride[dim]
        k_a, k_b = first.kernel_size[dim], second.kernel_size[dim]
        step_b = second.dilation[dim] * s_a if k_b > 1 else 0
        step_a = first.dilation[dim] if k_a > 1 else 0
        lattice = math.gcd(step_b, step_a) or 1
        stride.append(s_a * s_b)
        (lo_a, hi_a), (lo_b, hi_b) = first.padding[dim], second.padding[dim]
        padding.append((lo_b * s_a + lo_a, hi_b * s_a + hi_a))
        size = ((k_b - 1) * step_b + (k_a - 1) * step_a) // lattice + 1
        kernel.append(size)
        dilation.append(lattice if size > 1 else 1)
        starts.append(step_b // lattice)
        steps.append(max(step_a // lattice, 1))

    groups = math.gcd(first.groups, second.groups)
    a, b = expand_groups(first, groups), expand_groups(second, groups)
    mid_per_group = a.out_channels // groups
    w_a = in_fold_dtype(a.weight).reshape(groups, mid_per_group, a.weight.shape[1], *a.kernel_size)
    w_b = in_fold_dtype(b.weight).reshape(groups, b.out_channels // groups, mid_per_group, *b.kernel_size)
    weight = w_a.new_zeros(groups, b.out_channels // groups, a.weight.shape[1], *kernel)
    for tap in itertools.product(*(range(k) for k in b.kernel_size)):
        placed = tuple(
            slice(j * start, j * start + step * (k_a - 1) + 1, step)
            for j, start, step, k_a in zip(tap, starts, steps, a.kernel_size)
        )
        weight[(slice(None), slice(None), slice(None), *placed)] += torch.einsum(
            "gom,gmi...->goi...", w_b[(Ellipsis, *tap)], w_a
        )

    bias = b.bias
    if a.bias is not None:
        taps_sum = w_b.reshape(*w_b.shape[:3], -1).sum(dim=3)
        a_bias = in_fold_dtype(a.bias).reshape(groups, mid_per_group)
        carried = torch.einsum("gom,gm->go", taps_sum, a_bias).reshape(-1)
        bias = carried if bias is None else bias + carried
    return ConvMap(
        weight.reshape(b.out_channels, a.weight.shape[1], *kernel),
        bias,
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups,
        mode if any(lo or hi for lo, hi in padding) else "zeros",
    )


def concat(maps: Sequence[ConvMap]) -> ConvMap:
    """``cat([M_1(x), ..., M_n(x)], channels)``: one convolution with the outputs stacked.

    Over the common window, as for sums.  Stacking keeps channel order only with one
    group, so grouped maps are first written with one (block-diagonal) group.
    """
    maps = [as_forward(m) for m in maps]
    first = maps[0]
    for m in maps[1:]:
        require(
            m.in_channels == first.in_channels,
            f"concatenated maps read {first.in_channels} and {m.in_channels} channels",
        )
    window = common_window(maps)
    mode = padding_mode_of(maps)
    placed = [embed(expand_groups(m, 1), window, mode) for m in maps]
    weight = torch.cat([in_fold_dtype(m.weight) for m in placed])
    bias = None
    if any(m.bias is not None for m in placed):
        bias = torch.cat([m.bias_or_zeros() for m in placed])
    return placed[0].with_(weight=weight, bias=bias)
