"""The convolution map: the one value type of the algebra.

A ``ConvMap`` is the affine, shift-invariant map

    y[o, i] = b[o] + sum_{c, j} W[o, c, j] * pad(x)[g(o)*C_in/G + c, i*s + j*d]

over ``rank`` spatial dims, where ``pad`` adds ``padding[k] = (lo, hi)`` positions
before and after spatial dim ``k`` in ``padding_mode``.  Rank 0 is a linear layer
acting on the last axis of its input.  A transposed map stores the weight of
``conv_transpose`` (``[C_in, C_out/G, *kernel]``) and denotes that operation instead.

Everything here is pure tensor maths: no ``torch.fx``, no ``nn.Module``.  A map built
from a layer holds the layer's own weights, in the layer's dtype (no copy is made);
every function that computes new weights computes them in float64 (``FOLD_DTYPE``)
and returns them so.  The caller casts results back to the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import Tensor

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
FOLD_DTYPE = torch.float64


class Refused(Exception):
    """No exact rewrite exists; ``reason`` says why, in words a user can read."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def require(condition: bool, reason: str) -> None:
    """Raise :class:`Refused` with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise Refused(reason)


@dataclass(frozen=True, eq=False)
class ConvMap:
    """An affine, shift-invariant map of one tensor: a convolution in closed form."""

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    # Read from the weight's shape once, when the map is made (``rank``: the number of
    # spatial dims, 0 for a linear layer):
    rank: int = field(init=False, repr=False)
    kernel_size: tuple[int, ...] = field(init=False, repr=False)
    in_channels: int = field(init=False, repr=False)
    out_channels: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shape = tuple(self.weight.shape)
        rank = len(shape) - 2
        if rank < 0:
            raise ValueError(f"weight must have at least 2 dims, got shape {shape}")
        if self.transposed:
            in_channels, out_channels = shape[0], shape[1] * self.groups
        else:
            in_channels, out_channels = shape[1] * self.groups, shape[0]
        object.__setattr__(self, "rank", rank)
        object.__setattr__(self, "kernel_size", shape[2:])
        object.__setattr__(self, "in_channels", in_channels)
        object.__setattr__(self, "out_channels", out_channels)
        for name in ("stride", "padding", "dilation"):
            if len(getattr(self, name)) != rank:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for a rank-{rank} map")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"unknown padding mode {self.padding_mode!r}")
        if self.transposed:
            if len(self.output_padding) != rank:
                raise ValueError("a transposed map needs one output_padding per spatial dim")
            if self.padding_mode != "zeros" or any(lo != hi for lo, hi in self.padding):
                raise ValueError("a transposed map pads symmetrically with zeros")
        if shape[0] % self.groups:
            raise ValueError(f"groups={self.groups} does not divide the weight's leading dim")
        if self.bias is not None and self.bias.shape != (self.out_channels,):
            raise ValueError(f"bias shape {tuple(self.bias.shape)} != ({self.out_channels},)")

    # -- shape -----------------------------------------------------------------
    @property
    def reads_padding(self) -> bool:
        return any(lo or hi for lo, hi in self.padding)

    @property
    def is_pointwise(self) -> bool:
        """A 1-tap, stride-1, unpadded map: it acts on each position on its own."""
        return (
            not self.transposed
            and all(k == 1 for k in self.kernel_size)
            and all(s == 1 for s in self.stride)
            and not self.reads_padding
        )

    @property
    def has_bias(self) -> bool:
        return self.bias is not None and bool(torch.any(self.bias != 0))

    def bias_or_zeros(self) -> Tensor:
        if self.bias is not None:
            return in_fold_dtype(self.bias)
        return self.weight.new_zeros(self.out_channels, dtype=FOLD_DTYPE)

    def with_(self, **changes) -> "ConvMap":
        return replace(self, **changes)

    def describe(self) -> str:
        """A one-line summary, e.g. ``Conv2d 64->64 k3x3 s1 p1 g1``."""
        if self.rank == 0:
            return f"Linear {self.in_channels}->{self.out_channels}"
        kind = f"ConvTranspose{self.rank}d" if self.transposed else f"Conv{self.rank}d"
        fmt = lambda values: "x".join(str(v) for v in values)  # noqa: E731
        pads = [lo if lo == hi else f"({lo},{hi})" for lo, hi in self.padding]
        text = f"{kind} {self.in_channels}->{self.out_channels} k{fmt(self.kernel_size)} s{fmt(self.stride)} p{fmt(pads)}"
        if any(d != 1 for d in self.dilation):
            text += f" d{fmt(self.dilation)}"
        if self.groups != 1:
            text += f" g{self.groups}"
        if self.padding_mode != "zeros" and self.reads_padding:
            text += f" {self.padding_mode}"
        return text


# -- constructors ----------------------------------------------------------------
def _per_dim(value: int | Sequence[int], rank: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(int(v) for v in value)
    if len(value) == 1 and rank > 1:
        return value * rank
    if len(value) != rank:
        raise ValueError(f"{name} {value} does not have {rank} entries")
    return value


def _padding_pairs(padding, kernel_size, dilation, stride) -> tuple[tuple[int, int], ...]:
    """Per-dim ``(lo, hi)`` padding; ``'same'`` puts the odd extra position after."""
    rank = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * rank
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' needs stride 1")
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"unknown padding {padding!r}")
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    padding = tuple(padding)
    if all(isinstance(p, int) for p in padding):
        return tuple((p, p) for p in _per_dim(padding, rank, "padding"))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _held(t: Tensor | None) -> Tensor | None:
    """A layer's tensor as a map holds it: detached, in its own dtype, not copied."""
    return None if t is None else t.detach()


def in_fold_dtype(t: Tensor) -> Tensor:
    """``t`` in float64, for arithmetic (exact: float64 holds every float32/16 value)."""
    return t if t.dtype == FOLD_DTYPE else t.to(FOLD_DTYPE)


def conv(
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding=0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> ConvMap:
    """The map of ``F.conv{N}d(pad(x, padding_mode), weight, bias, stride, 0, dilation, groups)``.

    ``padding`` takes what ``nn.ConvNd`` takes (an int, one int per dim, ``'same'``,
    ``'valid'``) and also explicit ``(lo, hi)`` pairs per dim.
    """
    rank = weight.dim() - 2
    stride = _per_dim(stride, rank, "stride")
    dilation = _per_dim(dilation, rank, "dilation")
    pairs = _padding_pairs(padding, tuple(weight.shape[2:]), dilation, stride)
    return ConvMap(
        _held(weight),
        _held(bias),
        stride,
        pairs,
        dilation,
        groups,
        padding_mode if any(lo or hi for lo, hi in pairs) else "zeros",
    )


def conv_transpose(
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> ConvMap:
    """The map of ``F.conv_transpose{N}d(x, weight, bias, stride, padding, output_padding, groups, dilation)``."""
    rank = weight.dim() - 2
    pads = _per_dim(padding, rank, "padding")
    return ConvMap(
        _held(weight),
        _held(bias),
        _per_dim(stride, rank, "stride"),
        tuple((p, p) for p in pads),
        _per_dim(dilation, rank, "dilation"),
        groups,
        "zeros",
        transposed=True,
        output_padding=_per_dim(output_padding, rank, "output_padding"),
    )


def linear(weight: Tensor, bias: Tensor | None = None) -> ConvMap:
    """The map of ``F.linear(x, weight, bias)``: a rank-0 convolution on the last axis."""
    return ConvMap(_held(weight), _held(bias), (), (), ())


def channel_affine(scale: Tensor, shift: Tensor | None, rank: int) -> ConvMap:
    """``y[c] = scale[c] * x[c] + shift[c]``: a depthwise 1-tap map."""
    scale = _held(scale)
    channels = scale.numel()
    weight = scale.reshape((channels, 1) + (1,) * rank)
    return ConvMap(weight, _held(shift), (1,) * rank, ((0, 0),) * rank, (1,) * rank, channels)


def identity(channels: int, rank: int, *, device=None) -> ConvMap:
    """``y = x`` as a depthwise 1-tap map of ones (``groups = channels``).

    Expanding its groups to ``g`` gives the familiar ``W[o, o mod (C/g)] = 1``.
    """
    return channel_affine(torch.ones(channels, dtype=FOLD_DTYPE, device=device), None, rank)

