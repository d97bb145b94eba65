"""Hypothesis strategies for convolution maps."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from repfuse import algebra

F64 = torch.float64


def _tensor(draw, shape) -> torch.Tensor:
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=F64)


@st.composite
def geometries(draw, rank: int, max_kernel: int = 4, max_stride: int = 2, max_dilation: int = 2):
    """Per-dim (kernel, stride, (lo, hi), dilation)."""
    dims = []
    for _ in range(rank):
        k = draw(st.integers(1, max_kernel))
        s = draw(st.integers(1, max_stride))
        d = draw(st.integers(1, max_dilation)) if k > 1 else 1
        lo = draw(st.integers(0, (k - 1) * d))
        hi = draw(st.integers(0, (k - 1) * d))
        dims.append((k, s, (lo, hi), d))
    return dims


@st.composite
def conv_maps(
    draw,
    rank: int | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    groups: int | None = None,
    geometry=None,
    padding_mode: str | None = None,
    bias: bool | None = None,
):
    """A random ordinary ``ConvMap``; any argument given is fixed."""
    rank = draw(st.integers(1, 3)) if rank is None else rank
    if groups is None:
        groups = draw(st.sampled_from([1, 1, 2, 4]))
    cin = in_channels if in_channels is not None else groups * draw(st.integers(1, 2))
    cout = out_channels if out_channels is not None else groups * draw(st.integers(1, 2))
    dims = geometry if geometry is not None else draw(geometries(rank))
    mode = padding_mode if padding_mode is not None else draw(st.sampled_from(algebra.PADDING_MODES))
    with_bias = draw(st.booleans()) if bias is None else bias
    weight = _tensor(draw, (cout, cin // groups, *[k for k, _, _, _ in dims]))
    b = _tensor(draw, (cout,)) if with_bias else None
    return algebra.conv(
        weight,
        b,
        stride=[s for _, s, _, _ in dims],
        padding=[p for _, _, p, _ in dims],
        dilation=[d for _, _, _, d in dims],
        groups=groups,
        padding_mode=mode,
    )


def input_for(m, batch: int = 2, size: int = 13, generator_seed: int = 0) -> torch.Tensor:
    """An input that every map of the tests can read (long enough for reflect padding)."""
    generator = torch.Generator().manual_seed(generator_seed)
    return torch.randn((batch, m.in_channels) + (size,) * m.rank, generator=generator, dtype=F64)
