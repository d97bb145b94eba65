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
from .analysis import Analysis, Placement, Region, fetch_attr
from .analysis.constants import is_pure
from .describe import describe
from .ownership import shell

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
    on_meta = dict(dtype=placement.dtype, device="meta")  # no initialisation: the weights are ours
    if m.rank == 0:
        dense = expand_groups(m, 1)
        module = nn.Linear(m.in_channels, m.out_channels, bias=bias, **on_meta)
        weight = dense.weight
    elif m.transposed:
        module = _CONV_TRANSPOSE[m.rank](
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=tuple(lo for lo, _ in m.padding),
            output_padding=m.output_padding,
            groups=m.groups,
            bias=bias,
            dilation=m.dilation,
            **on_meta,
        )
        weight = m.weight
    else:
        symmetric = all(lo == hi for lo, hi in m.padding)
        module = _CONV[m.rank](
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=tuple(lo for lo, _ in m.padding) if symmetric else 0,
            dilation=m.dilation,
            groups=m.groups,
            bias=bias,
            padding_mode=m.padding_mode if symmetric else "zeros",
            **on_meta,
        )
        weight = m.weight
    memory_format = placement.memory_format if weight.dim() == 4 else torch.contiguous_format
    module.weight = nn.Parameter(weight.to(**factory, copy=True).contiguous(memory_format=memory_format))
    if bias:
        module.bias = nn.Parameter(m.bias.to(**factory, copy=True))
    return module


def _explicit_padding(m: ConvMap) -> tuple[list[int], str] | None:
    """``F.pad`` arguments for a map whose padding a conv module cannot express."""
    if m.rank == 0 or m.transposed or all(lo == hi for lo, hi in m.padding):
        return None
    return torch_padding(m.padding), ("constant" if m.padding_mode == "zeros" else m.padding_mode)


def _module_name(region: Region, modules: "_Modules", taken: set[str]) -> str:
    """The name of the module it replaces, or ``<common prefix>.fused``; never one in use."""
    calls = [n.target for n in region.members if n.op == "call_module"]
    weighted = [t for t in calls if isinstance(modules[t], (_ConvNd, nn.Linear))]
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
    while name in taken or name in modules:
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


class _Modules:
    """The modules of a ``GraphModule`` by name, changed only where they are the pass's own.

    A module of the caller's that holds a place the rewrite changes is first replaced,
    in its (own) parent, by a shallow copy (copy on write), so that the caller's model
    is never changed.
    """

    def __init__(self, gm: GraphModule, protected: frozenset[int], memo: dict):
        self.gm = gm
        self.protected = protected
        self.memo = memo
        self.by_name = dict(gm.named_modules())
        self.owned = {""}  # paths known to hold the pass's own modules

    def __getitem__(self, name: str) -> nn.Module:
        return self.by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self.by_name or _holds_attribute(self.gm, name)

    def _own(self, path: str) -> nn.Module:
        """The module at ``path``, made the pass's own (copied if it is the caller's)."""
        known = self.by_name.get(path)
        if known is not None and path in self.owned:
            return known
        module = self.gm
        walked = []
        for part in path.split(".") if path else []:
            child = getattr(module, part, None)
            if child is None:
                child = nn.Module()
                setattr(module, part, child)
            elif id(child) in self.protected:
                child = shell(child, self.memo)
                setattr(module, part, child)
            walked.append(part)
            self.by_name[".".join(walked)] = child
            self.owned.add(".".join(walked))
            module = child
        return module

    def install(self, name: str, module: nn.Module) -> None:
        prefix, _, field = name.rpartition(".")
        setattr(self._own(prefix), field, module)
        self.by_name[name] = module

    def prune(self, names: set[str]) -> None:
        """Delete the named modules no node uses any more, and the containers they leave empty."""
        used = _used_names(self.gm.graph)
        deleted: set[str] = set()
        for name in sorted(names):
            parts = name.split(".")
            if any(".".join(parts[:i]) in deleted for i in range(1, len(parts))):
                continue  # inside a module already deleted
            while name and name not in used and name in self.by_name:
                module = self.by_name[name]
                if name not in names and (module._modules or module._parameters or module._buffers):
                    break  # a container that still holds something
                prefix, _, field = name.rpartition(".")
                delattr(self._own(prefix), field)
                del self.by_name[name]
                deleted.add(name)
                name = prefix


def _holds_attribute(owner: nn.Module, name: str) -> bool:
    try:
        fetch_attr(owner, name)
    except AttributeError:
        return False
    return True


def _used_names(graph) -> set[str]:
    """Every module path a ``call_module`` or ``get_attr`` node reaches, with all its prefixes."""
    used = set()
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            parts = node.target.split(".")
            used.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return used


def rewrite(
    gm: GraphModule, analysis: Analysis, protected: frozenset[int] = frozenset(), memo: dict | None = None
) -> list[Merge]:
    """Replace each region worth it in ``gm`` (in place) and return what became what.

    Modules whose ids are in ``protected`` (the caller's) are not changed.
    """
    graph = gm.graph
    modules = _Modules(gm, protected, {} if memo is None else memo)
    replaced: dict[Node, Node] = {}
    taken: set[str] = set()
    orphans: set[str] = set()
    merges = []
    for region in analysis.regions:
        if not worth_rewriting(region):
            continue
        root = region.root
        while root in replaced:
            root = replaced[root]
        members = tuple(describe(n, modules) for n in region.members)
        orphans.update(n.target for n in region.members if n.op == "call_module")
        m = region.map
        if m is None:
            new, name, result = root, None, "identity"
        else:
            name = _module_name(region, modules, taken)
            modules.install(name, build_module(m, region.placement))
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
    modules.prune(orphans - taken)
    graph.lint()
    gm.recompile()
    return merges
