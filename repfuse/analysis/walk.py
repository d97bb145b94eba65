"""One walk over the graph in topological order, giving each node an abstract value.

A node with a rule gets the value its rule computes from its arguments' values; an
argument's value is merged into it only when that argument has no other reader (else
the argument is kept, and merging starts again from it as a new root).  A node whose
rule refuses, and a node with no rule, is opaque: it reads its arguments as tensors,
so each argument that has a value ends a region there.

The values nobody merged further are the candidate regions, each one convolution of
its root.  They are then planned top down: a region the cost policy rejects, or one
that cannot be written as a module, keeps its last op as it is and its parts become
candidates in turn.

Folds and sums are checked where they happen but their weights are computed only for
a region the plan accepts (a value's map may be a :class:`~repfuse.algebra.PendingSum`):
one new float64 kernel per emitted region, cast to the model's dtype.  Work a rule
does for all modules of one kind (BatchNorm's scale and shift) is done at once before
the walk (see ``Registry.register(..., prepare=)``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.fx import Graph, Node

from ..algebra import ConvMap, Cost, Refused, depthwise, lift_rank
from ..rules import REGISTRY, Opaque, Registry
from ..value import Refusal, Value
from .constants import Constants
from .context import NodeContext
from .mutation import Writes
from .paths import Paths
from .policy import CostPolicy, MaximalPolicy
from .ranks import known_ndim, node_shape

_CALLS = ("call_module", "call_function", "call_method")


@dataclass(frozen=True)
class Placement:
    """Where a new module's weights live: dtype, device and memory format."""

    dtype: torch.dtype
    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format

    def place(self, tensor: Tensor | None) -> Tensor | None:
        """A new tensor holding ``tensor``'s values where this placement says."""
        if tensor is None:
            return None
        memory_format = self.memory_format if tensor.dim() == 4 else torch.contiguous_format
        return tensor.to(self.device, self.dtype, copy=True, memory_format=memory_format)


@dataclass
class Region:
    """Ops that together compute ``map`` of ``root``; ``sink`` is the last of them.

    ``map`` is ``None`` where the ops amount to ``root`` itself; its weights are the
    region's own, placed as ``placement`` says (as the weights of the ops it replaces).
    """

    sink: Node
    root: Node
    members: list[Node]
    map: ConvMap | None
    placement: Placement | None = None


@dataclass
class Analysis:
    """The regions the graph's values form, and why merging stopped where it did."""

    regions: list[Region]
    refusals: list[Refusal] = field(default_factory=list)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in _HOOKS)


def _tensors_of(module: nn.Module) -> list[Tensor]:
    """The parameters and buffers of ``module`` and its children."""
    if not module._modules:  # a leaf, as most called modules are: skip the recursion
        return [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
    return list(module.parameters()) + list(module.buffers())


class Walk:
    """The state of one analysis: live values, regions found so far, notes on what was not merged.

    A value lives until its last reader has been visited: then it has either been merged
    into that reader's value, or it is the end of a region, which is planned at once and
    released (so that only the maps of unfinished regions are held at any time).
    """

    def __init__(self, graph: Graph, paths: Paths, registry: Registry, policy: CostPolicy | MaximalPolicy):
        self.graph = graph
        self.paths = paths
        self.registry = registry
        self.policy = policy
        self.values: dict[Node, Value] = {}
        self.regions: list[Region] = []
        self._position = {node: index for index, node in enumerate(graph.nodes)}
        self._writes = Writes(graph, self._position, self.module_of, registry.is_leaf)
        self.constants = Constants(paths.__getitem__, self._writes.may_be_written)
        self._notes: dict[tuple[Node, str], Refusal] = {}
        self._ndims: dict[Node, int | None] = {}
        self._rules: dict[Node, object] = {}
        self.prepared: dict[nn.Module, object] = {}  # by the rules' preparations (see Registry.register)
        self._pins = self._pin_reasons()

    def module_of(self, node: Node) -> nn.Module:
        return self.paths[node.target]

    # -- notes -------------------------------------------------------------------
    def note(self, node: Node, reason: str) -> None:
        self._notes.setdefault((node, reason), Refusal(node, reason))

    @property
    def refusals(self) -> list[Refusal]:
        return list(self._notes.values())

    def ndim(self, node: Node) -> int | None:
        if node not in self._ndims:
            self._ndims[node] = known_ndim(node, self.paths)
        return self._ndims[node]

    # -- shared parameters and hooks ---------------------------------------------
    def _pin_reasons(self) -> dict[Node, str]:
        """Ops that must not merge with any other: hooked modules and shared parameters."""
        calls: Counter[int] = Counter()
        sites: Counter[int] = Counter()
        tensors: dict[Node, list[Tensor]] = {}
        for node in self.graph.nodes:
            if node.op == "call_module":
                module = self.module_of(node)
                calls[id(module)] += 1
                tensors[node] = _tensors_of(module)
            elif node.op == "get_attr":
                attr = self.constants.value(node)
                if isinstance(attr, Tensor):
                    sites[id(attr)] += len(node.users)
        for node, owned in tensors.items():
            for tensor in owned:
                sites[id(tensor)] += 1
        pins: dict[Node, str] = {}
        for node in self.graph.nodes:
            if node.op == "call_module":
                module = self.module_of(node)
                if _has_hooks(module):
                    pins[node] = f"`{node.target}` has hooks, which would not run on a merged op"
                elif calls[id(module)] > 1:
                    pins[node] = (
                        f"`{node.target}` is called at {calls[id(module)]} places; merging one call would untie its weights"
                    )
                elif any(sites[id(t)] > 1 for t in tensors[node]):
                    pins[node] = f"`{node.target}` shares parameters with another op; merging would untie them"
            elif node.op in _CALLS:
                for arg in node.all_input_nodes:
                    if arg.op == "get_attr":
                        attr = self.constants.value(arg)
                        if isinstance(attr, Tensor) and sites[id(attr)] > 1:
                            pins[node] = f"`{arg.target}` is shared with another op; merging would untie it"
                            break
        return pins

    # -- the walk ----------------------------------------------------------------
    def run(self) -> Analysis:
        nodes = list(self.graph.nodes)
        self._prepare([node for node in nodes if node.op == "call_module"])
        last_reader = {node: max((self._reader_position(u) for u in node.users), default=-1) for node in nodes}
        for index, node in enumerate(nodes):
            if node.op in _CALLS:
                self._visit(node)
            if node in self.values and last_reader[node] < index:
                self._sink(node)  # nothing reads it
            for arg in node.all_input_nodes:
                if arg in self.values and last_reader[arg] == index:
                    self._sink(arg)  # its last reader did not merge it
        for node in list(self.values):
            self._sink(node)
        self.regions.sort(key=lambda region: self._position[region.sink])
        return Analysis(self.regions, self.refusals)

    def _reader_position(self, user: Node) -> int:
        """Where a value read by ``user`` is decided: at the reader of a gathering op (stack)."""
        if user.op == "call_function" and user.target in self.registry.gathering_ops and len(user.users) == 1:
            return self._position[next(iter(user.users))]
        return self._position[user]

    def _sink(self, node: Node) -> None:
        self._plan(self.values.pop(node))

    def _plan(self, value: Value) -> None:
        """Make ``value`` a region if it pays off and can be emitted; else split it at its op."""
        if value.is_root or value.is_released:
            return  # a released value stays as it is (its fold was kept apart for its own reasons)
        members = sorted(value.members(), key=self._position.__getitem__)
        emitted, reason = self._emitted(value, merges=len(members) > 1)
        if reason is None and len(members) > 1 and emitted is not None:
            reason = self.policy.verdict(emitted, self._parts_cost(value, emitted))
        if reason is None:
            reason = self._writes.hazard(value.root, value.node, members, identity=emitted is None)
        if reason is None:
            placement = self._placement(members)
            if emitted is not None:  # the region's own weights, as the model will hold them
                emitted = emitted.with_(weight=placement.place(emitted.weight), bias=placement.place(emitted.bias))
            self.regions.append(Region(value.node, value.root, members, emitted, placement))
            return
        if reason:
            self.note(value.node, reason)
        for part in {part.node: part for part in value.parts}.values():
            self._plan(part)  # once each: an op may read one value twice (``y + y``)

    def _placement(self, members: list[Node]) -> Placement:
        """The dtype, device and memory format of the members' weights (else of their buffers)."""
        first = next((t for t in self._member_tensors(members) if t.is_floating_point()), None)
        if first is None:
            meta = members[-1].meta.get("tensor_meta")
            return Placement(getattr(meta, "dtype", None) or torch.get_default_dtype(), torch.device("cpu"))
        channels_last = (
            first.dim() == 4 and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last)
        )
        return Placement(first.dtype, first.device, torch.channels_last if channels_last else torch.contiguous_format)

    def _member_tensors(self, members: list[Node]):
        for node in members:
            if node.op == "call_module":
                yield from _tensors_of(self.module_of(node))
            for arg in node.all_input_nodes:
                if arg.op == "get_attr" and isinstance(self.constants.value(arg), Tensor):
                    yield self.constants.value(arg)

    def _emitted(self, value: Value, merges: bool) -> tuple[ConvMap | None, str | None]:
        """The map a region of ``value`` becomes (``None``: its root itself), or why none.

        The reason is ``""`` where there is nothing worth saying: ops without a
        convolution among them (a new convolution would not beat elementwise ops), or a
        lone op.
        """
        if value.is_identity:
            return None, None
        if not value.convolves:
            return None, ""  # elementwise ops and padding: they stay as they are
        if not value.uniform:
            return value.map, None
        shape = node_shape(value.node)
        if value.geometry.rank == 0 or not merges:
            return None, ""
        if shape is None or len(shape) - 2 < value.geometry.rank:
            return None, "it treats every channel alike and their number is unknown (pass example_inputs)"
        return depthwise(lift_rank(value.map, len(shape) - 2), int(shape[1])), None

    @staticmethod
    def _parts_cost(value: Value, emitted: ConvMap) -> Cost:
        """What the region's ops cost as they are, per output position of ``emitted``."""
        if value.uniform:
            return value.cost * emitted.out_channels
        return value.cost

    def _rule(self, node: Node):
        """The rule for ``node`` (``None``: no rule), or :class:`Refused` with the reason there is none."""
        if node not in self._rules:
            try:
                module = self.module_of(node) if node.op == "call_module" else None
                self._rules[node] = self.registry.rule_for(node, module)
            except Refused as refusal:
                self._rules[node] = refusal
        return self._rules[node]

    def _prepare(self, calls: list[Node]) -> None:
        """Run each module rule's preparation once, on all the modules the graph calls with that rule."""
        modules: dict[object, list[nn.Module]] = {}
        for node in calls:
            rule = self._rule(node)
            if rule in self.registry.preparations:
                modules.setdefault(rule, []).append(self.module_of(node))
        for rule, found in modules.items():
            self.prepared.update(self.registry.preparations[rule](list(dict.fromkeys(found))))

    def _visit(self, node: Node) -> None:
        rule = self._rule(node)
        if isinstance(rule, Refused):
            self.note(node, rule.reason)
            return
        if rule is None:
            return
        ctx = NodeContext(self, node, self._pins.get(node))
        try:
            value = rule(node, ctx)
        except Refused as refusal:
            self.note(node, refusal.reason)
            return
        except Opaque:
            return
        self.values[node] = value
        for absorbed in set(ctx.absorbed):
            self.values.pop(absorbed)  # it lives on in ``value``


def analyze(
    graph: Graph,
    paths: Paths,
    registry: Registry = REGISTRY,
    policy: CostPolicy | MaximalPolicy | None = None,
) -> Analysis:
    """Abstract values for every node of ``graph`` and the regions they form.

    ``paths`` holds the modules and attributes the graph's targets name.
    """
    return Walk(graph, paths, registry, policy or CostPolicy()).run()
