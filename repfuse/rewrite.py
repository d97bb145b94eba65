"""Replacing each region of the analysis by the one op its value describes.

A region of one op that is already what it would become (a lone convolution, a lone
BatchNorm) is left alone.  Any other region becomes one new ``nn.ConvNd``,
``nn.ConvTranspose{N}d`` or ``nn.Linear`` applied to the region's root (after an
``F.pad`` where the padding is not symmetric), or, for the identity, the root
itself.  New modules are built; existing ones are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torch.nn.modules.conv import _ConvNd

from .algebra import ConvMap, expand_groups, torch_padding
from .analysis import Analysis, Paths, Placement, Region
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


def _uninitialised(cls: type[nn.Module], *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` with its parameters on the meta device and not initialised.

    The caller sets the weights; drawing random initial ones (``reset_parameters``,
    which torch's layers call from ``__init__``) would be wasted work.
    """
    module = cls.__new__(cls)
    object.__setattr__(module, "reset_parameters", lambda: None)  # found before the class's method
    cls.__init__(module, *args, device="meta", **kwargs)
    del module.__dict__["reset_parameters"]
    return module


def build_module(m: ConvMap, placement: Placement) -> nn.Module:
    """A new module computing ``m`` (minus any asymmetric padding), holding ``m``'s weights.

    ``m``'s weights are a region's own, placed as ``placement`` says.
    """
    bias = m.bias is not None
    if m.rank == 0:
        dense = expand_groups(m, 1)
        module = _uninitialised(nn.Linear, m.in_channels, m.out_channels, bias=bias, dtype=placement.dtype)
        weight = dense.weight
    elif m.transposed:
        module = _uninitialised(
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
            dtype=placement.dtype,
        )
        weight = m.weight
    else:
        symmetric = all(lo == hi for lo, hi in m.padding)
        module = _uninitialised(
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
            dtype=placement.dtype,
        )
        weight = m.weight
    module.weight = nn.Parameter(weight if weight is m.weight else placement.place(weight))
    if bias:
        module.bias = nn.Parameter(m.bias)
    return module


def _explicit_padding(m: ConvMap) -> tuple[list[int], str] | None:
    """``F.pad`` arguments for a map whose padding a conv module cannot express."""
    if m.rank == 0 or m.transposed or all(lo == hi for lo, hi in m.padding):
        return None
    return torch_padding(m.padding), ("constant" if m.padding_mode == "zeros" else m.padding_mode)


def _module_name(region: Region, paths: Paths, taken: dict[str, nn.Module]) -> str:
    """The name of the module it replaces, or ``<common prefix>.fused``; never one in use.

    A replaced module's name is free: the region's nodes were its only callers.
    """
    calls = [n.target for n in region.members if n.op == "call_module"]
    weighted = [t for t in calls if isinstance(paths[t], (_ConvNd, nn.Linear))]
    if len(weighted) == 1 and weighted[0] not in taken:
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
    while name in taken or name in paths:
        suffix += 1
        name = f"{base}_{suffix}"
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


def _targets(graph: Graph) -> list[str]:
    """The module and attribute paths the graph's ``call_module`` and ``get_attr`` nodes name."""
    return list(dict.fromkeys(n.target for n in graph.nodes if n.op in ("call_module", "get_attr")))


@dataclass
class Rewrite:
    """The graph, rewritten in place; the modules it now calls that the pass built; what became what."""

    graph: Graph
    built: dict[str, nn.Module]
    merges: list[Merge]

    def module(self, paths: Paths, class_name: str) -> GraphModule:
        """A new ``GraphModule`` running the graph, holding the built modules and the others of ``paths``.

        The modules and tensors of ``paths.owner`` are held as they are, not copied.
        """
        attributes = {t: self.built[t] if t in self.built else paths[t] for t in _targets(self.graph)}
        gm = GraphModule(attributes, self.graph, class_name)
        gm.training = paths.owner.training
        gm.graph.lint()
        return gm

    def install(self, gm: GraphModule) -> None:
        """Put the built modules into ``gm`` (the graph's owner), drop the ones no node calls, recompile."""
        for name, module in self.built.items():
            gm.add_submodule(name, module)
        gm.delete_all_unused_submodules()
        gm.graph.lint()
        gm.recompile()


def rewrite(graph: Graph, paths: Paths, analysis: Analysis) -> Rewrite:
    """Replace each region worth it in ``graph`` (in place) by one new module.

    ``paths`` holds the modules the graph calls; they are not changed.
    """
    built: dict[str, nn.Module] = {}
    replaced: dict[Node, Node] = {}
    merges = []
    for region in analysis.regions:
        if not worth_rewriting(region):
            continue
        root = region.root
        while root in replaced:
            root = replaced[root]
        members = tuple(describe(n, paths) for n in region.members)
        m = region.map
        if m is None:
            new, name, result = root, None, "identity"
        else:
            name = _module_name(region, paths, built)
            built[name] = build_module(m, region.placement)
            with graph.inserting_before(region.sink):
                source = root
                padding = _explicit_padding(m)
                if padding is not None:
                    source = graph.call_function(F.pad, (root, padding[0]), {"mode": padding[1]})
                new = graph.create_node("call_module", name, (source,))  # its module is put in place later
            new.meta = dict(region.sink.meta)
            result = m.describe()
        region.sink.replace_all_uses_with(new)
        replaced[region.sink] = new
        _erase(graph, region.members)
        merges.append(Merge(name, members, result))
    return Rewrite(graph, built, merges)
