"""Where a map's taps read its input, and the same map written over a larger window.

Along one spatial dim, output position ``i`` of a map with stride ``s``, padding
``(lo, hi)``, kernel ``k`` and dilation ``d`` reads the input positions

    i*s + a,    a in {-lo, -lo + d, ..., -lo + (k-1)*d}        (its tap offsets)

and turns ``L`` input positions into ``floor((L + e - 1) / s) + 1`` outputs, where
``e = lo + hi - (k-1)*d`` is its *extent*.  Maps with one stride and one extent
produce the same number of outputs for every ``L``.  If moreover every tap offset of
each lies on a common lattice ``-P + t*D``, each is a convolution over the window
``(P, K, D)``: its kernel goes into a ``K``-tap kernel of dilation ``D`` with zeros
elsewhere, and the padded positions it did not read meet those zeros.

Padding modes are position-consistent (reflect, replicate and circular give the same
value at input position ``-q`` whatever the total padding), so a map that reads
padding may be embedded into a wider window of its own mode, and a map that reads
none into a window of any mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .convmap import ConvMap, Refused


@dataclass(frozen=True)
class Window:
    """A convolution's geometry along each spatial dim: padding, kernel size, dilation."""

    padding: tuple[tuple[int, int], ...]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]

    def extent(self, dim: int) -> int:
        lo, hi = self.padding[dim]
        return lo + hi - (self.kernel_size[dim] - 1) * self.dilation[dim]


def window_of(m: ConvMap) -> Window:
    return Window(m.padding, m.kernel_size, m.dilation)


def _extent(m: ConvMap, dim: int) -> int:
    """``lo + hi - (k-1)*d`` of ``m`` along ``dim``."""
    lo, hi = m.padding[dim]
    return lo + hi - (m.kernel_size[dim] - 1) * m.dilation[dim]


def _taps(m: ConvMap, dim: int) -> tuple[int, int, int]:
    """``(first offset, step, count)`` of ``m``'s taps along ``dim``."""
    k = m.kernel_size[dim]
    return -m.padding[dim][0], (m.dilation[dim] if k > 1 else 0), k


def common_window(maps: Sequence[ConvMap]) -> Window:
    """The smallest window over which each of ``maps`` is a convolution.

    Preconditions (else :class:`Refused`): not transposed, one rank, one stride, and
    along each dim one extent (the outputs have one size for every input size).
    """
    first_map = maps[0]
    for m in maps:
        if m.transposed:
            raise Refused("a transposed convolution cannot share a window with other branches")
        if m.rank != first_map.rank:
            raise Refused(f"branches have {first_map.rank} and {m.rank} spatial dims")
        if m.stride != first_map.stride:
            raise Refused(f"branches have different strides {first_map.stride} and {m.stride}")
    if all(
        m.padding == first_map.padding and m.kernel_size == first_map.kernel_size and m.dilation == first_map.dilation
        for m in maps
    ):
        kernel = first_map.kernel_size  # one geometry: its own window (a 1-tap dim has dilation 1)
        return Window(first_map.padding, kernel, tuple(d if k > 1 else 1 for k, d in zip(kernel, first_map.dilation)))
    padding, kernel, dilation = [], [], []
    for dim in range(first_map.rank):
        extents = {_extent(m, dim) for m in maps}
        if len(extents) != 1:
            raise Refused(
                f"branch outputs differ in size along spatial dim {dim} "
                f"(padding and kernel give extents {sorted(extents)})"
            )
        taps = [_taps(m, dim) for m in maps]
        first = min(start for start, _, _ in taps)
        last = max(start + step * (count - 1) for start, step, count in taps)
        lattice = 0
        for start, step, _ in taps:
            lattice = math.gcd(lattice, step, start - first)
        lattice = lattice or 1
        size = (last - first) // lattice + 1
        lo = -first
        hi = extents.pop() + (size - 1) * lattice - lo
        padding.append((lo, hi))
        kernel.append(size)
        dilation.append(lattice if size > 1 else 1)
    return Window(tuple(padding), tuple(kernel), tuple(dilation))


def placement(m: ConvMap, window: Window, padding_mode: str | None = None) -> tuple[slice, ...]:
    """Where ``m``'s kernel taps go in a kernel over ``window`` (per spatial dim).

    Preconditions (else :class:`Refused`): ``m``'s taps lie on the window's lattice,
    its extent equals the window's, and it reads no padding unless ``padding_mode``
    (default: its own) is its own.
    """
    mode = padding_mode or m.padding_mode
    if m.transposed:
        raise Refused("a transposed convolution cannot be embedded into a window")
    if mode != m.padding_mode and m.reads_padding:
        raise Refused(f"branches pad differently ({m.padding_mode} and {mode})")
    if m.padding == window.padding and m.kernel_size == window.kernel_size and m.dilation == window.dilation:
        return (slice(None),) * m.rank  # the window is its own
    slices = []
    for dim in range(m.rank):
        start, step, count = _taps(m, dim)
        lo = window.padding[dim][0]
        lattice = window.dilation[dim]
        if _extent(m, dim) != window.extent(dim):
            raise Refused(f"outputs differ in size along spatial dim {dim}")
        offset = start + lo
        if not (offset >= 0 and offset % lattice == 0 and step % lattice == 0):
            raise Refused(f"taps along spatial dim {dim} do not lie on the merged kernel's lattice")
        begin, stride = offset // lattice, max(step // lattice, 1)
        end = begin + stride * (count - 1) + 1
        if end > window.kernel_size[dim]:
            raise Refused(f"kernel does not fit the merged window along dim {dim}")
        slices.append(slice(begin, end, stride))
    return tuple(slices)


def window_mode(window: Window, mode: str) -> str:
    """The padding mode a map over ``window`` records: ``mode``, or zeros if it pads nothing."""
    return mode if any(lo or hi for lo, hi in window.padding) else "zeros"


def embed(m: ConvMap, window: Window, padding_mode: str | None = None) -> ConvMap:
    """``m`` written as a convolution over ``window`` (same outputs, zero-filled kernel).

    ``padding_mode`` is the mode the result pads with (default: ``m``'s own); the
    preconditions are those of :func:`placement`.
    """
    slices = placement(m, window, padding_mode)
    weight = m.weight.new_zeros(m.weight.shape[:2] + window.kernel_size)
    weight[(slice(None), slice(None), *slices)] = m.weight
    return m.with_(
        weight=weight,
        padding=window.padding,
        dilation=window.dilation,
        padding_mode=window_mode(window, padding_mode or m.padding_mode),
    )


def padding_mode_of(maps: Sequence[ConvMap]) -> str:
    """The one padding mode of the maps that read padding (``'zeros'`` if none does)."""
    modes = {m.padding_mode for m in maps if m.reads_padding}
    if len(modes) > 1:
        raise Refused(f"branches pad their input differently ({', '.join(sorted(modes))})")
    return modes.pop() if modes else "zeros"
