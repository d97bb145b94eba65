"""Replacing each region of the analysis by the one op its value describes.

A region of one op that is already what it would become (a lone convolution, a lone
BatchNorm) is left alone.  Any other region becomes one new ``nn.ConvNd``,
``nn.ConvTranspose{N}d`` or ``nn.Linear`` applied to the region's root (after an
``F.pad`` where the padding is not symmetric), or, for the identity, the root
itself.  New modules are built; existing ones are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node
from torch.nn.modules.conv import _ConvNd

from .algebra import ConvMap, expand_groups, torch_padding
from .analysis import Analysis, Region, fetch_attr
from .analysis.constants import is_pure
from .describe import describe

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@dataclass(frozen=True)
class Merge:
    """The ops ``members`` became ``module`` (``None``: their root itself), which computes ``result``."""

    module: str | None
    members: tuple[str, ...]
    result: str


def build_module(m: ConvMap, placement: Placement) -> nn.Module:
    """A new module computing ``m`` (minus any asymmetric padding), its weights placed as ``placement`` says."""
    factory = dict(dtype=placement.dtype, device=placement.device)
    bias = m.bias is not None
    if m.rank == 0:
        dense = expand_groups(m, 1)
        module = nn.utils.skip_init(nn.Linear, m.in_channels, m.out_channels, bias=bias, **factory)
        weight = dense.weight
    elif m.transposed:
        module = nn.utils.skip_init(
            _CONV_TRANSPOSE[m.rank],
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=tuple(lo for lo, _ in m.padding),
            output_padding=m.output_padding,
            groups=m.groups,
            bias=bias,
            dilation=m.dilation,
            **factory,
        )
        weight = m.weight
    else:
        symmetric = all(lo == hi for lo, hi in m.padding)
        module = nn.utils.skip_init(
            _CONV[m.rank],
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=tuple(lo for lo, _ in m.padding) if symmetric else 0,
            dilation=m.dilation,
            groups=m.groups,
            bias=bias,
            padding_mode=m.padding_mode if symmetric else "zeros",
            **factory,
        )
        weight = m.weight
    memory_format = placement.memory_format if weight.dim() == 4 else torch.contiguous_format
    module.weight = nn.Parameter(weight.to(**factory).contiguous(memory_format=memory_format))
    if bias:
        module.bias = nn.Parameter(m.bias.to(**factory))
    return module


def _explicit_padding(m: ConvMap) -> tuple[list[int], str] | None:
    """``F.pad`` arguments for a map whose padding a conv module cannot express."""
    if m.rank == 0 or m.transposed or all(lo == hi for lo, hi in m.padding):
        return None
    return torch_padding(m.padding), ("constant" if m.padding_mode == "zeros" else m.padding_mode)


def _region_tensors(region: Region, owner: nn.Module):
    for node in region.members:
        if node.op == "call_module":
            module = owner.get_submodule(node.target)
            yield from module.parameters()
            yield from module.buffers()
        for arg in node.all_input_nodes:
            if arg.op == "get_attr":
                attr = fetch_attr(owner, arg.target)
                if isinstance(attr, torch.Tensor):
                    yield attr


@dataclass(frozen=True)
class Placement:
    """Where a new module's weights live: dtype, device and memory format."""

    dtype: torch.dtype
    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format


def _placement(region: Region, owner: nn.Module) -> Placement:
    """The dtype, device and memory format of the region's weights (else its buffers)."""
    floating = [t for t in _region_tensors(region, owner) if t.is_floating_point()]
    if not floating:
        meta = region.sink.meta.get("tensor_meta")
        return Placement(getattr(meta, "dtype", None) or torch.get_default_dtype(), torch.device("cpu"))
    first = floating[0]
    channels_last = (
        first.dim() == 4 and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last)
    )
    return Placement(first.dtype, first.device, torch.channels_last if channels_last else torch.contiguous_format)


def _exists(owner: nn.Module, name: str) -> bool:
    try:
        fetch_attr(owner, name)
    except AttributeError:
        return False
    return True


def _module_name(region: Region, owner: GraphModule, taken: set[str]) -> str:
    """The name of the module it replaces, or ``<common prefix>.fused``; never one in use."""
    calls = [n.target for n in region.members if n.op == "call_module"]
    weighted = [t for t in calls if isinstance(owner.get_submodule(t), (_ConvNd, nn.Linear))]
    if len(weighted) == 1 and weighted[0] not in taken:
        taken.add(weighted[0])
        return weighted[0]
    paths = [t.split(".") for t in calls]
    paths += [arg.target.split(".")[:-1] for n in region.members for arg in n.all_input_nodes if arg.op == "get_attr"]
    prefix: list[str] = []
    if paths:
        for parts in zip(*paths):
            if len(set(parts)) != 1:
                break
            prefix.append(parts[0])
        if prefix and any(len(p) == len(prefix) for p in paths):
            prefix.pop()  # the prefix is a module being replaced, not its parent
    base = ".".join(prefix + ["fused"])
    name, suffix = base, 0
    while name in taken or _exists(owner, name):
        suffix += 1
        name = f"{base}_{suffix}"
    taken.add(name)
    return name


def _erase(graph, members: list[Node]) -> None:
    """Erase the region's ops (now without readers) and the constants only they read."""
    erased: set[Node] = set()
    pending = list(members)
    region = set(members)
    while pending:
        node = pending.pop()
        if node in erased or node.users:
            continue
        if node not in region and not (node.op == "get_attr" or is_pure(node)):
            continue
        erased.add(node)
        inputs = node.all_input_nodes
        graph.erase_node(node)
        pending.extend(arg for arg in inputs if arg not in region)


def worth_rewriting(region: Region) -> bool:
    """More than one op to merge, or ops that amount to their input."""
    return len(region.members) > 1 or region.map is None


def rewrite(gm: GraphModule, analysis: Analysis) -> list[Merge]:
    """Replace each region worth it in ``gm`` (in place) and return what became what."""
    graph = gm.graph
    replaced: dict[Node, Node] = {}
    taken: set[str] = set()
    merges = []
    for region in analysis.regions:
        if not worth_rewriting(region):
            continue
        root = region.value.root
        while root in replaced:
            root = replaced[root]
        members = tuple(describe(n, gm) for n in region.members)
        m = region.map
        if m is None:
            new, name, result = root, None, "identity"
        else:
            name = _module_name(region, gm, taken)
            gm.add_submodule(name, build_module(m, _placement(region, gm)))
            with graph.inserting_before(region.sink):
                source = root
                padding = _explicit_padding(m)
                if padding is not None:
                    source = graph.call_function(F.pad, (root, padding[0]), {"mode": padding[1]})
                new = graph.call_module(name, (source,))
            new.meta = dict(region.sink.meta)
            result = m.describe()
        region.sink.replace_all_uses_with(new)
        replaced[region.sink] = new
        _erase(graph, region.members)
        merges.append(Merge(name, members, result))
    gm.delete_all_unused_submodules()
    graph.lint()
    gm.recompile()
    return merges
