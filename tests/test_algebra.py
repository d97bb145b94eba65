"""The algebra against torch.nn.functional, in float64."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from repfuse import algebra
from repfuse.algebra import Refused

from .strategies import F64, _tensor, conv_maps, geometries, input_for

EXACT = 1e-10
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float = EXACT) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-30)
    error = ((actual - expected).abs().max() / scale).item()
    assert error < tol, f"relative error {error:.3g}"


def x_for(rank: int, channels: int, size: int = 11, batch: int = 2) -> torch.Tensor:
    return torch.randn((batch, channels) + (size,) * rank, dtype=F64)


# -- constructors match the modules they describe ------------------------------------
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("mode", algebra.PADDING_MODES)
def test_conv_map_matches_module(rank, mode):
    module = CONV[rank](6, 4, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode=mode).to(F64)
    m = algebra.conv(module.weight, module.bias, module.stride, module.padding, module.dilation, 2, mode)
    x = x_for(rank, 6, size=9)
    close(algebra.apply(m, x), module(x))


@pytest.mark.parametrize("kernel,dilation", [(2, 1), (4, 1), (3, 2), (4, 3)])
def test_same_padding_matches_torch(kernel, dilation):
    weight = torch.randn(3, 3, kernel, kernel, dtype=F64)
    m = algebra.conv(weight, None, 1, "same", dilation)
    x = x_for(2, 3, size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that even kernels copy the input
        expected = F.conv2d(x, weight, padding="same", dilation=dilation)
    close(algebra.apply(m, x), expected)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_map_matches_module(rank):
    module = CONV_TRANSPOSE[rank](4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2).to(F64)
    m = algebra.conv_transpose(
        module.weight, module.bias, module.stride, module.padding, module.output_padding, 2, module.dilation
    )
    x = x_for(rank, 4, size=5)
    close(algebra.apply(m, x), module(x))
    assert (m.in_channels, m.out_channels) == (4, 6)


def test_linear_map_acts_on_last_axis():
    layer = nn.Linear(5, 3).to(F64)
    x = torch.randn(2, 7, 5, dtype=F64)
    close(algebra.apply(algebra.linear(layer.weight, layer.bias), x), layer(x))


# -- identity, groups, embedding ------------------------------------------------------
@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_identity_is_identity(rank):
    x = torch.randn((2, 6) + (5,) * rank, dtype=F64) if rank else torch.randn(3, 6, dtype=F64)
    close(algebra.apply(algebra.identity(6, rank), x), x)


def test_identity_under_groups_puts_ones_at_o_mod_group_width():
    m = algebra.expand_groups(algebra.identity(6, 2), 2)
    weight = m.weight[:, :, 0, 0]
    expected = torch.zeros(6, 3, dtype=F64)
    for o in range(6):
        expected[o, o % 3] = 1
    assert m.groups == 2
    assert torch.equal(weight, expected)


@given(m=conv_maps(groups=4), target=st.sampled_from([1, 2, 4]))
def test_expand_groups_keeps_outputs(m, target):
    expanded = algebra.expand_groups(m, target)
    assert expanded.groups == target
    x = input_for(m)
    close(algebra.apply(expanded, x), algebra.apply(m, x))


def test_expand_groups_refuses_a_non_divisor():
    with pytest.raises(Refused, match="do not divide"):
        algebra.expand_groups(algebra.identity(6, 2), 4)


def test_embed_into_a_larger_dilated_window():
    m = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), torch.randn(4, dtype=F64), 1, 2, 2)
    window = algebra.Window(((4, 4), (4, 4)), (5, 5), (2, 2))
    embedded = algebra.embed(m, window)
    assert embedded.kernel_size == (5, 5)
    x = x_for(2, 4)
    close(algebra.apply(embedded, x), algebra.apply(m, x))


def test_embed_refuses_taps_off_the_lattice():
    m = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1)
    window = algebra.Window(((2, 2), (2, 2)), (3, 3), (2, 2))
    with pytest.raises(Refused):
        algebra.embed(m, window)


# -- per-channel affine maps and BatchNorm --------------------------------------------
def _bn_stats(channels):
    return (
        torch.randn(channels, dtype=F64),
        torch.rand(channels, dtype=F64) + 0.25,
        1e-5,
        torch.rand(channels, dtype=F64) + 0.5,
        torch.randn(channels, dtype=F64),
    )


@given(m=conv_maps(), affine=st.booleans())
def test_fold_batch_norm_matches_batch_norm(m, affine):
    mean, var, eps, weight, bias = _bn_stats(m.out_channels)
    if not affine:
        weight = bias = None
    folded = algebra.fold_batch_norm(m, mean, var, eps, weight, bias)
    x = input_for(m)
    expected = F.batch_norm(algebra.apply(m, x), mean, var, weight, bias, False, 0.0, eps)
    close(algebra.apply(folded, x), expected)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("cin,cout,groups", [(4, 6, 2), (6, 6, 6), (3, 5, 1)])
def test_fold_batch_norm_into_transposed_conv(rank, cin, cout, groups):
    m = algebra.conv_transpose(
        torch.randn(cin, cout // groups, *(3,) * rank, dtype=F64), torch.randn(cout, dtype=F64), 2, 1, 1, groups
    )
    mean, var, eps, weight, bias = _bn_stats(cout)
    folded = algebra.fold_batch_norm(m, mean, var, eps, weight, bias)
    x = x_for(rank, cin, size=5)
    expected = F.batch_norm(algebra.apply(m, x), mean, var, weight, bias, False, 0.0, eps)
    close(algebra.apply(folded, x), expected)


def test_many_batch_norms_at_once_equal_each_on_its_own():
    statistics = []
    for channels, eps, affine, dtype in [(3, 1e-5, True, F64), (8, 1e-3, False, torch.float32), (1, 0.1, True, torch.float16)]:
        mean, var, _, weight, bias = (t.to(dtype) if isinstance(t, torch.Tensor) else t for t in _bn_stats(channels))
        statistics.append((mean, var, eps, weight if affine else None, bias if affine else None))
    batched = algebra.batch_norm_scale_shifts(statistics)
    assert len(batched) == len(statistics)
    for (scale, shift), one in zip(batched, statistics):
        alone_scale, alone_shift = algebra.batch_norm_scale_shift(*one)
        assert scale.dtype == shift.dtype == F64
        assert torch.equal(scale, alone_scale) and torch.equal(shift, alone_shift)
    assert algebra.batch_norm_scale_shifts([]) == []


def test_fold_batch_norm_refuses_a_channel_mismatch():
    m = algebra.conv(torch.randn(4, 4, 1, 1, dtype=F64))
    with pytest.raises(Refused, match="5 features"):
        algebra.fold_batch_norm(m, *_bn_stats(5))


# -- sums of branches ------------------------------------------------------------------
@st.composite
def branch_pairs(draw, count: int = 2):
    """``count`` maps with one stride and one extent per dim (outputs of one size)."""
    rank = draw(st.integers(1, 3))
    strides = [draw(st.integers(1, 2)) for _ in range(rank)]
    extents = [draw(st.integers(-2, 2)) for _ in range(rank)]
    channels = 4
    maps = []
    for _ in range(count):
        dims = []
        for s, e in zip(strides, extents):
            k = draw(st.integers(1, 4))
            d = draw(st.integers(1, 3)) if k > 1 else 1
            lo = draw(st.integers(0, (k - 1) * d + 2))
            hi = e + (k - 1) * d - lo
            assume(hi >= 0)
            dims.append((k, s, (lo, hi), d))
        groups = draw(st.sampled_from([1, 2, 4]))
        maps.append(draw(conv_maps(rank, channels, channels, groups, dims, padding_mode=draw(st.sampled_from(["zeros", "reflect"])))))
    return maps


@given(pair=branch_pairs())
def test_sum_of_branches_matches_or_refuses_for_padding_modes(pair):
    a, b = pair
    x = input_for(a, size=12)
    reading = {m.padding_mode for m in pair if m.reads_padding}
    try:
        merged = algebra.add(a, b)
    except Refused as refusal:
        assert len(reading) > 1, refusal.reason
        assert "pad" in refusal.reason
        return
    assert len(reading) <= 1
    assert merged.groups == math.gcd(a.groups, b.groups)
    close(algebra.apply(merged, x), algebra.apply(a, x) + algebra.apply(b, x))


@given(maps=branch_pairs(count=3))
def test_a_pending_chain_of_sums_is_the_sum_of_its_terms(maps):
    """``(a + b) + c`` kept pending: refused where ``sum_maps([a, b, c])`` is, else equal to it."""
    a, b, c = maps
    try:
        expected = algebra.sum_maps([a, b, c])
    except Refused:
        with pytest.raises(Refused):
            algebra.pending_sum([algebra.pending_sum([a, b]), c])
        return
    chain = algebra.pending_sum([algebra.pending_sum([a, b]), c])
    assert chain.terms == (a, b, c)
    merged = chain.evaluate()
    for name in ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode", "out_channels"):
        assert getattr(chain.geometry, name) == getattr(merged, name) == getattr(expected, name), name
    x = input_for(a, size=12)
    close(algebra.apply(merged, x), algebra.apply(a, x) + algebra.apply(b, x) + algebra.apply(c, x))


@given(maps=branch_pairs(count=2), scaled=st.tuples(st.booleans(), st.booleans()), shifted=st.booleans())
def test_a_pending_sum_of_scaled_branches_is_computed_as_written(maps, scaled, shifted):
    """``s_a * A + s_b * B + t``, folded lazily (including grouped terms on the block diagonal)."""
    a, b = maps
    try:
        algebra.sum_maps([a, b])
    except Refused:
        return
    channels = a.out_channels
    s_a, s_b, t = (torch.rand(channels, dtype=F64) + 0.5 for _ in range(3))
    lazy_a = algebra.pending_scale_shift(a, s_a if scaled[0] else None)
    lazy_b = algebra.pending_scale_shift(b, s_b if scaled[1] else None, t if shifted else None)
    merged = algebra.pending_scale_shift(algebra.pending_sum([lazy_a, lazy_b]), 2.0).evaluate()
    x = input_for(a, size=12)
    per_channel = lambda v: v.view((1, -1) + (1,) * a.rank)  # noqa: E731
    expected = algebra.apply(a, x) * (per_channel(s_a) if scaled[0] else 1)
    expected = expected + algebra.apply(b, x) * (per_channel(s_b) if scaled[1] else 1)
    expected = 2.0 * (expected + (per_channel(t) if shifted else 0))
    close(algebra.apply(merged, x), expected)


def test_scaled_grouped_branches_land_on_the_block_diagonal_scaled():
    a = algebra.conv(torch.randn(6, 3, 3, 3, dtype=F64), torch.randn(6, dtype=F64), 1, 1, groups=2)
    b = algebra.conv(torch.randn(6, 2, 1, 1, dtype=F64), None, 1, 0, groups=3)
    s_a, s_b = torch.rand(6, dtype=F64) + 0.5, torch.rand(6, dtype=F64) + 0.5
    merged = algebra.pending_sum([algebra.pending_scale_shift(a, s_a), algebra.pending_scale_shift(b, s_b)]).evaluate()
    assert merged.groups == 1
    x = x_for(2, 6)
    expected = algebra.apply(a, x) * s_a.view(1, -1, 1, 1) + algebra.apply(b, x) * s_b.view(1, -1, 1, 1)
    close(algebra.apply(merged, x), expected)


@pytest.mark.parametrize("rank", [1, 2])
def test_a_pending_fold_into_a_strided_transposed_conv(rank):
    m = algebra.conv_transpose(torch.randn(4, 3, *(3,) * rank, dtype=F64), torch.randn(6, dtype=F64), 2, 1, 1, 2)
    mean, var, eps, weight, bias = _bn_stats(6)
    scale, shift = algebra.batch_norm_scale_shift(mean, var, eps, weight, bias)
    folded = algebra.pending_scale_shift(m, scale, shift).evaluate()
    assert folded.transposed and folded.stride == (2,) * rank
    x = x_for(rank, 4, size=5)
    expected = F.batch_norm(algebra.apply(m, x), mean, var, weight, bias, False, 0.0, eps)
    close(algebra.apply(folded, x), expected)


def test_repvgg_branches_sum_to_one_3x3():
    dense = algebra.conv(torch.randn(8, 8, 3, 3, dtype=F64), torch.randn(8, dtype=F64), 1, 1)
    point = algebra.conv(torch.randn(8, 8, 1, 1, dtype=F64), torch.randn(8, dtype=F64))
    merged = algebra.sum_maps([dense, point, algebra.identity(8, 2)])
    assert merged.kernel_size == (3, 3) and merged.padding == ((1, 1), (1, 1))
    x = x_for(2, 8)
    close(algebra.apply(merged, x), algebra.apply(dense, x) + algebra.apply(point, x) + x)


def test_dilated_branch_plus_pointwise_keeps_the_dilation():
    dilated = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 2, 2)
    point = algebra.conv(torch.randn(4, 4, 1, 1, dtype=F64))
    merged = algebra.add(dilated, point)
    assert merged.kernel_size == (3, 3) and merged.dilation == (2, 2)
    x = x_for(2, 4)
    close(algebra.apply(merged, x), algebra.apply(dilated, x) + algebra.apply(point, x))


def test_sum_refuses_different_strides():
    a = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 2, 1)
    b = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1)
    with pytest.raises(Refused, match="different strides"):
        algebra.add(a, b)


def test_sum_refuses_outputs_of_different_sizes():
    a = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 0)
    b = algebra.conv(torch.randn(4, 4, 1, 1, dtype=F64))
    with pytest.raises(Refused, match="differ in size"):
        algebra.add(a, b)


def test_sum_refuses_reflect_plus_zero_padding():
    a = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1, padding_mode="reflect")
    b = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1)
    with pytest.raises(Refused, match="reflect, zeros"):
        algebra.add(a, b)


def test_sum_of_reflect_branches_merges():
    a = algebra.conv(torch.randn(4, 4, 5, 5, dtype=F64), None, 1, 2, padding_mode="reflect")
    b = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1, padding_mode="reflect")
    merged = algebra.add(a, b)
    x = x_for(2, 4)
    close(algebra.apply(merged, x), algebra.apply(a, x) + algebra.apply(b, x))


# -- composition -----------------------------------------------------------------------
@st.composite
def sequences(draw):
    rank = draw(st.integers(1, 2))
    ga, gb = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2, 4]))
    a = draw(conv_maps(rank, in_channels=2 * ga, out_channels=4, groups=ga))
    b = draw(conv_maps(rank, in_channels=4, groups=gb, geometry=draw(geometries(rank, max_kernel=3))))
    return a, b


@given(pair=sequences())
def test_composition_matches_sequence_or_refuses_for_padding(pair):
    a, b = pair
    x = input_for(a, size=16)
    exact = not b.reads_padding or (a.is_pointwise and (b.padding_mode != "zeros" or not a.has_bias))
    try:
        composite = algebra.compose(a, b)
    except Refused as refusal:
        assert not exact, refusal.reason
        return
    assert exact
    close(algebra.apply(composite, x), algebra.apply(b, algebra.apply(a, x)))


def test_biased_pointwise_then_zero_padded_3x3_is_refused():
    a = algebra.conv(torch.randn(4, 4, 1, 1, dtype=F64), torch.randn(4, dtype=F64))
    b = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1)
    with pytest.raises(Refused, match="zero padding after a biased op"):
        algebra.compose(a, b)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_biased_pointwise_then_non_zero_padded_3x3_merges(mode):
    a = algebra.conv(torch.randn(4, 4, 1, 1, dtype=F64), torch.randn(4, dtype=F64))
    b = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), torch.randn(4, dtype=F64), 1, 1, padding_mode=mode)
    composite = algebra.compose(a, b)
    x = x_for(2, 4)
    close(algebra.apply(composite, x), algebra.apply(b, algebra.apply(a, x)))


def test_batch_norm_then_zero_padded_3x3_is_refused_unpadded_merges():
    mean, var, eps, weight, bias = _bn_stats(4)
    bn = algebra.channel_affine(*algebra.batch_norm_scale_shift(mean, var, eps, weight, bias), rank=2)
    padded = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 1)
    with pytest.raises(Refused):
        algebra.compose(bn, padded)
    unpadded = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), None, 1, 0)
    x = x_for(2, 4)
    close(algebra.apply(algebra.compose(bn, unpadded), x), algebra.apply(unpadded, algebra.apply(bn, x)))


def test_two_3x3_compose_to_a_5x5():
    a = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), torch.randn(4, dtype=F64), 1, 1)
    b = algebra.conv(torch.randn(4, 4, 3, 3, dtype=F64), torch.randn(4, dtype=F64), 1, 0)
    composite = algebra.compose(a, b)
    assert composite.kernel_size == (5, 5)
    x = x_for(2, 4)
    close(algebra.apply(composite, x), algebra.apply(b, algebra.apply(a, x)))


def test_linear_then_linear():
    a = algebra.linear(torch.randn(5, 6, dtype=F64), torch.randn(5, dtype=F64))
    b = algebra.linear(torch.randn(3, 5, dtype=F64), torch.randn(3, dtype=F64))
    x = torch.randn(2, 4, 6, dtype=F64)
    close(algebra.apply(algebra.compose(a, b), x), algebra.apply(b, algebra.apply(a, x)))


# -- transposed convolutions -----------------------------------------------------------
@given(
    rank=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    kernel=st.integers(1, 4),
    dilation=st.integers(1, 3),
    data=st.data(),
)
def test_stride_one_transposed_conv_is_a_conv(rank, groups, kernel, dilation, data):
    padding = data.draw(st.integers(0, (kernel - 1) * dilation))
    output_padding = data.draw(st.integers(0, dilation - 1))
    weight = _tensor(data.draw, (2 * groups, 3, *(kernel,) * rank))
    m = algebra.conv_transpose(weight, None, 1, padding, output_padding, groups, dilation)
    forward = algebra.as_forward(m)
    assert not forward.transposed
    x = x_for(rank, 2 * groups, size=14)
    close(algebra.apply(forward, x), algebra.apply(m, x))


def test_strided_transposed_conv_is_refused_as_a_conv():
    m = algebra.conv_transpose(torch.randn(4, 4, 3, 3, dtype=F64), None, 2, 1)
    with pytest.raises(Refused, match="stride"):
        algebra.as_forward(m)


# -- cost ------------------------------------------------------------------------------
def test_cost_counts_macs_per_output_position():
    depthwise = algebra.conv(torch.randn(8, 1, 3, 3, dtype=F64), None, 1, 1, groups=8)
    point = algebra.conv(torch.randn(8, 8, 1, 1, dtype=F64))
    assert algebra.cost(depthwise).macs == 8 * 9
    assert algebra.cost(point).macs == 64
    merged = algebra.add(depthwise, point)
    assert algebra.cost(merged).macs == 8 * 8 * 9
    assert algebra.cost(merged).macs > (algebra.cost(depthwise) + algebra.cost(point)).macs


def test_describe_names_the_geometry():
    m = algebra.conv(torch.randn(8, 4, 3, 1, dtype=F64), None, (2, 1), ((1, 0), (0, 0)), 1, groups=2)
    assert m.describe() == "Conv2d 8->8 k3x1 s2x1 p(1,0)x0 g2"


# -- precision: layers' own weights in, float64 arithmetic out ---------------------------
def test_maps_hold_a_layers_weights_without_a_copy():
    layer = nn.Conv2d(4, 4, 3)
    m = algebra.conv(layer.weight, layer.bias, 1, 1)
    assert m.weight.data_ptr() == layer.weight.data_ptr() and m.weight.dtype == torch.float32


def test_every_computed_weight_is_float64_from_float32_maps():
    a = algebra.conv(torch.randn(4, 2, 3, 3), torch.randn(4), 1, 1, groups=2)
    b = algebra.conv(torch.randn(4, 4, 1, 1), torch.randn(4))
    c = algebra.conv(torch.randn(4, 4, 3, 3), torch.randn(4))  # unpadded
    mean, var, eps, weight, bias = _bn_stats_float32()
    results = {
        "sum": algebra.add(a, b),
        "sum with identity": algebra.sum_maps([a, algebra.identity(4, 2)]),
        "compose": algebra.compose(b, c),
        "fold": algebra.fold_batch_norm(a, mean, var, eps, weight, bias),
        "scale": algebra.scale_shift(a, 0.5, 0.25),
        "concat": algebra.concat([a, b]),
    }
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    exact = {
        "sum": lambda: algebra.apply(a, x) + algebra.apply(b, x),
        "sum with identity": lambda: algebra.apply(a, x) + x,
        "compose": lambda: algebra.apply(c, algebra.apply(b, x)),
        "fold": lambda: F.batch_norm(algebra.apply(a, x), mean.double(), var.double(), weight.double(), bias.double(), False, 0.0, eps),
        "scale": lambda: algebra.apply(a, x) * 0.5 + 0.25,
        "concat": lambda: torch.cat([algebra.apply(a, x), algebra.apply(b, x)], 1),
    }
    for name, m in results.items():
        assert m.weight.dtype == F64 and (m.bias is None or m.bias.dtype == F64), name
        close(algebra.apply(m, x), exact[name]())


def _bn_stats_float32():
    return torch.randn(4), torch.rand(4) + 0.25, 1e-5, torch.rand(4) + 0.5, torch.randn(4)
