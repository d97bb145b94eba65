"""Property-based proofs of equivalence: random MobileOne blocks and random graphs."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import repfuse
from repfuse.models import MobileOneBlock

from .helpers import EXACT, F64, assert_unchanged, ops, randomize_batch_norms, snapshot


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    generator = _seeded(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return randomize_batch_norms(model, generator).eval().to(F64)


@st.composite
def mobileone_blocks(draw):
    depthwise = draw(st.booleans())
    in_channels = draw(st.sampled_from([2, 4, 6]))
    out_channels = in_channels if depthwise or draw(st.booleans()) else draw(st.sampled_from([2, 4, 8]))
    kernel = draw(st.sampled_from([1, 3, 5] if depthwise else [1, 3]))
    block = MobileOneBlock(
        in_channels,
        out_channels,
        kernel,
        stride=draw(st.sampled_from([1, 2])),
        groups=in_channels if depthwise else draw(st.sampled_from([1, 2])),
        branches=draw(st.integers(1, 4)),
        use_scale=draw(st.booleans()),
        use_skip=draw(st.booleans()),
    )
    return _randomize(block, draw(st.integers(0, 2**16))), draw(st.integers(4, 9))


@given(case=mobileone_blocks())
def test_random_mobileone_block_fuses_to_one_conv(case):
    block, size = case
    before = snapshot(block)
    x = torch.randn(2, block.convs[0].conv.in_channels, size, size + 1, dtype=F64)
    fused = repfuse.fuse(block)
    counts = ops(fused)
    assert counts["conv"] == 1 and counts["bn"] == 0 and counts["add"] == 0
    with torch.no_grad():
        error = repfuse.relative_error(fused(x), block(x))
    assert error < EXACT
    assert_unchanged(block, before)


# -- random graphs ------------------------------------------------------------------
class RandomGraph(nn.Module):
    """Runs ``steps``: each ``(kind, inputs, module name or None)`` reads earlier results."""

    def __init__(self, steps, modules, outputs):
        super().__init__()
        self.steps = steps
        self.layers = nn.ModuleDict(modules)
        self.outputs = outputs

    def forward(self, x):
        values = [x]
        for kind, inputs, name in self.steps:
            args = [values[i] for i in inputs]
            if kind == "module":
                values.append(self.layers[name](args[0]))
            elif kind == "functional":
                values.append(_functional(self.layers[name], args[0]))
            elif kind == "relu":
                values.append(F.relu(args[0]))
            elif kind == "add":
                values.append(args[0] + args[1])
            elif kind == "sum":
                values.append(sum(args))
            elif kind == "cat":
                values.append(torch.cat(args, dim=1))
            elif kind == "pad":
                amounts, mode = name
                values.append(F.pad(args[0], amounts, mode))
            elif kind == "scale":
                values.append(args[0] * self.layers[name].weight + self.layers[name].bias)
            elif kind == "write":  # in place: every other name for this tensor sees it
                if name == "relu_":
                    values.append(args[0].relu_())
                elif name == "+=":
                    target = args[0]
                    target += args[1]
                    values.append(target)
                else:
                    values.append(args[0].mul_(2.0))
        return tuple(values[i] for i in self.outputs)


def _functional(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``layer`` computes, spelled with ``torch.nn.functional`` and its tensors."""
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.1, layer.eps)
    if isinstance(layer, nn.Linear):
        return F.linear(x, layer.weight, layer.bias)
    rank = len(layer.kernel_size)
    if layer.transposed:
        conv = getattr(F, f"conv_transpose{rank}d")
        return conv(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    conv = getattr(F, f"conv{rank}d")
    return conv(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def _conv_output(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
SIZE = {1: 11, 2: 9, 3: 6}  # spatial size of the input, per rank


@st.composite
def _conv(draw, rank: int, channels: int, size: int, stride: int | None = None, same: bool = False):
    """A random conv reading ``channels`` x ``size``; ``same``: odd kernel, output size kept."""
    s = stride if stride is not None else draw(st.sampled_from([1, 1, 1, 2]))
    k = draw(st.integers(1, 5)) if (s == 1 or not same) else draw(st.sampled_from([1, 3, 5]))
    d = draw(st.sampled_from([1, 1, 2])) if k > 1 else 1
    if same and s == 1 and draw(st.booleans()):
        p = "same"  # for even kernels, one more position after than before
    elif same:
        p = d * (k - 1) // 2 if k % 2 else 0
        k = k if k % 2 else 1
    else:
        p = draw(st.integers(0, (d * (k - 1) + 1) // 2))
    reach = d * (k - 1) - d * (k - 1) // 2 if p == "same" else p
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"])) if reach < size else "zeros"
    groups = draw(st.sampled_from([g for g in (1, 2, channels) if channels % g == 0]))
    out_channels = channels if same else groups * draw(st.integers(1, max(1, 8 // groups)))
    conv = CONV[rank](channels, out_channels, k, s, p, d, groups, bias=draw(st.booleans()), padding_mode=mode)
    return conv, out_channels, size if p == "same" else _conv_output(size, k, s, p, d)


@st.composite
def _conv_transpose(draw, rank: int, channels: int, size: int):
    """A random transposed conv reading ``channels`` x ``size``, and its output channels and size."""
    s, k = draw(st.sampled_from([1, 1, 2])), draw(st.integers(1, 4))
    d = draw(st.sampled_from([1, 1, 2])) if k > 1 else 1
    p = draw(st.integers(0, d * (k - 1)))
    extra = draw(st.integers(0, max(s, d) - 1))  # output_padding
    groups = draw(st.sampled_from([g for g in (1, 2, channels) if channels % g == 0]))
    out_channels = groups * draw(st.integers(1, max(1, 8 // groups)))
    conv = CONV_TRANSPOSE[rank](channels, out_channels, k, s, p, extra, groups, draw(st.booleans()), d)
    return conv, out_channels, (size - 1) * s - 2 * p + d * (k - 1) + extra + 1


@st.composite
def random_graphs(draw):
    """Small graphs in 1, 2 or 3 spatial dims of convs, transposed convs, linear layers
    on the last dim, BN (modules or their functional forms), identity,
    dropout, adds, sums, ReLU, concatenation, average pooling, padding, constant scales
    and shifts (per channel, scalar, or along the last dim), blocks of parallel branches
    (conv, conv-BN, BN, identity) summed in any order, and writes in place (``relu_``,
    ``mul_``, ``+=``) into any earlier value but the input.  The model's ``rank`` is its
    number of spatial dims."""
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    shapes = [(4, SIZE[rank])]  # (channels, spatial size) of each value; value 0 is the input
    steps, modules = [], {}
    for index in range(draw(st.integers(1, 8))):
        kinds = ["block", "block", "conv", "conv", "convT", "linear", "bn", "identity", "relu", "add", "sum", "cat", "pool", "pad", "scale", "write"]
        kind = draw(st.sampled_from(kinds))
        latest = len(shapes) - 1
        source = draw(st.sampled_from([latest, latest, latest, draw(st.integers(0, latest))]))
        channels, size = shapes[source]
        name = f"m{index}"
        if kind in ("add", "sum", "cat"):
            if kind == "cat":
                partners = [i for i, (c, s) in enumerate(shapes) if s == size]
            else:
                partners = [i for i, shape in enumerate(shapes) if shape == shapes[source]]
            count = 2 if kind != "sum" else draw(st.integers(2, 4))
            inputs = [source] + [draw(st.sampled_from(partners)) for _ in range(count - 1)]
            steps.append((kind, inputs, None))
            shapes.append((sum(shapes[i][0] for i in inputs) if kind == "cat" else channels, size))
        elif kind == "block":
            stride = draw(st.sampled_from([1, 1, 2]))
            branches = []
            for b in range(draw(st.integers(2, 4))):
                branch = draw(st.sampled_from(["conv", "convbn", "bn", "identity"] if stride == 1 else ["conv", "convbn"]))
                if branch in ("conv", "convbn"):
                    conv, _, out_size = draw(_conv(rank, channels, size, stride, same=True))
                    layer = nn.Sequential(conv, BATCH_NORM[rank](channels)) if branch == "convbn" else conv
                else:
                    layer, out_size = (BATCH_NORM[rank](channels) if branch == "bn" else nn.Identity()), size
                modules[f"{name}b{b}"] = layer
                steps.append(("module", [source], f"{name}b{b}"))
                shapes.append((channels, out_size))
                branches.append(len(shapes) - 1)
            order = draw(st.permutations(branches))
            if draw(st.booleans()):
                steps.append(("sum", order, None))
            else:
                total = order[0]
                for other in order[1:]:
                    steps.append(("add", [total, other], None))
                    shapes.append((channels, shapes[other][1]))
                    total = len(shapes) - 1
                continue
            shapes.append((channels, shapes[branches[0]][1]))
        elif kind in ("conv", "convT"):
            conv, out_channels, out_size = draw(_conv(rank, channels, size) if kind == "conv" else _conv_transpose(rank, channels, size))
            if not 1 <= out_size <= 2 * SIZE[rank]:
                continue
            modules[name] = conv
            functional = conv.padding_mode == "zeros" and draw(st.booleans())
            steps.append(("functional" if functional else "module", [source], name))
            shapes.append((out_channels, out_size))
        elif kind == "linear":  # along the last dim, which keeps its size
            modules[name] = nn.Linear(size, size, bias=draw(st.booleans()))
            steps.append(("functional" if draw(st.booleans()) else "module", [source], name))
            shapes.append((channels, size))
        elif kind == "pool":
            k = draw(st.integers(1, 3))
            stride = draw(st.integers(1, 2))
            p = draw(st.integers(0, k // 2))
            out_size = _conv_output(size, k, stride, p, 1)
            if out_size < 1 or size < k:  # torch refuses pooling windows larger than the unpadded input
                continue
            modules[name] = AVG_POOL[rank](k, stride, p, count_include_pad=draw(st.booleans()))
            steps.append(("module", [source], name))
            shapes.append((channels, out_size))
        elif kind == "pad":
            lo, hi = draw(st.integers(0, 2)), draw(st.integers(0, 2))
            mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
            if mode != "constant" and max(lo, hi) >= size:
                mode = "constant"
            steps.append(("pad", [source], ([lo, hi] * rank, mode)))
            shapes.append((channels, size + lo + hi))
        elif kind == "scale":
            layer = nn.Conv2d(1, 1, 1)  # a holder for two constants
            shape = draw(st.sampled_from([(1, channels) + (1,) * rank, (channels,) + (1,) * rank, (), (size,)]))
            layer.weight = nn.Parameter(torch.rand(shape) + 0.5)
            layer.bias = nn.Parameter(torch.rand(draw(st.sampled_from([shape, ()]))))
            modules[name] = layer
            steps.append(("scale", [source], name))
            shapes.append((channels, size))
        elif kind == "write":
            if source == 0:
                continue  # the caller's input is left alone
            op = draw(st.sampled_from(["relu_", "mul_", "+="]))
            partners = [i for i, shape in enumerate(shapes) if shape == shapes[source]]
            steps.append(("write", [source, draw(st.sampled_from(partners))], op))
            shapes.append((channels, size))
        elif kind == "bn":
            modules[name] = BATCH_NORM[rank](channels, affine=draw(st.booleans()))
            steps.append(("functional" if draw(st.booleans()) else "module", [source], name))
            shapes.append((channels, size))
        elif kind == "identity":
            modules[name] = draw(st.sampled_from([nn.Identity(), nn.Dropout(0.5)]))
            steps.append(("module", [source], name))
            shapes.append((channels, size))
        else:
            steps.append(("relu", [source], None))
            shapes.append((channels, size))
    last = len(shapes) - 1
    outputs = sorted({last, draw(st.sampled_from([last, last, draw(st.integers(0, last))]))})
    model = RandomGraph(steps, modules, outputs)
    model.rank = rank
    return _randomize(model, draw(st.integers(0, 2**16)))


@given(model=random_graphs(), policy=st.sampled_from(["cost", "maximal"]), shapes=st.booleans())
def test_random_graph_fuses_to_an_equivalent_model(model, policy, shapes):
    before = snapshot(model)
    x = torch.randn(2, 4, *[SIZE[model.rank]] * model.rank, dtype=F64, generator=_seeded(0))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module=r"torch\.fx")  # as of a node erased twice
        fused = repfuse.fuse(model, x if shapes else None, policy=policy)
    assert torch.equal(x, torch.randn(x.shape, dtype=F64, generator=_seeded(0)))  # fuse left it alone
    x_model, x_fused = x.clone(), x.clone()  # a write into an identity's output writes into the input
    with torch.no_grad():
        expected, actual = model(x_model), fused(x_fused)
    assert repfuse.relative_error(x_fused, x_model) < EXACT
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert repfuse.relative_error(a, e) < EXACT
    assert_unchanged(model, before)
    assert len(fused.graph.nodes) <= len(repfuse.trace.trace(model).graph.nodes)


@given(model=random_graphs())
def test_random_graph_exported_fuses_to_an_equivalent_program(model):
    """The same graphs through ``torch.export``: ATen ops, functionalized writes."""
    x = torch.randn(2, 4, *[SIZE[model.rank]] * model.rank, dtype=F64, generator=_seeded(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on the model
        program = torch.export.export(model, (x.clone(),))
        fused = repfuse.fuse(program)
    with torch.no_grad():
        expected, actual = model(x.clone()), fused.module()(x.clone())
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert repfuse.relative_error(a, e) < EXACT
