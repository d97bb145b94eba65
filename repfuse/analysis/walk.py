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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.fx import GraphModule, Node

from ..algebra import ConvMap, Cost, Refused, depthwise, lift_rank
from ..rules import REGISTRY, Opaque, Registry
from ..value import Refusal, Value
from .constants import Constants
from .context import NodeContext, fetch_attr
from .policy import CostPolicy, MaximalPolicy
from .ranks import known_ndim, node_shape

_CALLS = ("call_module", "call_function", "call_method")


@dataclass
class Region:
    """Ops that together compute ``value``; ``sink`` is the last, ``map`` what they become.

    ``map`` is ``None`` where the ops amount to their root tensor itself.
    """

    sink: Node
    value: Value
    members: list[Node]
    map: ConvMap | None


@dataclass
class Analysis:
    """Every node's value, the regions they form, and why merging stopped where it did."""

    values: dict[Node, Value]
    regions: list[Region]
    refusals: list[Refusal] = field(default_factory=list)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in _HOOKS)


class Walk:
    """The state of one analysis: values so far and notes on what was not merged."""

    def __init__(self, owner: GraphModule, registry: Registry, policy: CostPolicy | MaximalPolicy):
        self.owner = owner
        self.registry = registry
        self.policy = policy
        self.values: dict[Node, Value] = {}
        self.absorbed: set[Node] = set()
        self._notes: dict[tuple[Node, str], Refusal] = {}
        self.constants = Constants(lambda target: fetch_attr(owner, target))
        self._ndims: dict[Node, int | None] = {}
        self._pins = self._pin_reasons()

    # -- notes -------------------------------------------------------------------
    def note(self, node: Node, reason: str) -> None:
        self._notes.setdefault((node, reason), Refusal(node, reason))

    @property
    def refusals(self) -> list[Refusal]:
        return list(self._notes.values())

    def ndim(self, node: Node) -> int | None:
        if node not in self._ndims:
            self._ndims[node] = known_ndim(node, self.owner)
        return self._ndims[node]

    # -- shared parameters and hooks ---------------------------------------------
    def _pin_reasons(self) -> dict[Node, str]:
        """Ops that must not merge with any other: hooked modules and shared parameters."""
        calls: Counter[int] = Counter()
        sites: Counter[int] = Counter()
        tensors: dict[Node, list[Tensor]] = {}
        for node in self.owner.graph.nodes:
            if node.op == "call_module":
                module = self.owner.get_submodule(node.target)
                calls[id(module)] += 1
                tensors[node] = list(module.parameters()) + list(module.buffers())
            elif node.op == "get_attr":
                attr = fetch_attr(self.owner, node.target)
                if isinstance(attr, Tensor):
                    sites[id(attr)] += len(node.users)
        for node, owned in tensors.items():
            for tensor in owned:
                sites[id(tensor)] += 1
        pins: dict[Node, str] = {}
        for node in self.owner.graph.nodes:
            if node.op == "call_module":
                module = self.owner.get_submodule(node.target)
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
                        attr = fetch_attr(self.owner, arg.target)
                        if isinstance(attr, Tensor) and sites[id(attr)] > 1:
                            pins[node] = f"`{arg.target}` is shared with another op; merging would untie it"
                            break
        return pins

    # -- the walk ----------------------------------------------------------------
    def run(self) -> Analysis:
        self._position = {}
        for index, node in enumerate(self.owner.graph.nodes):
            self._position[node] = index
            if node.op in _CALLS:
                self._visit(node)
        regions: list[Region] = []
        for node, value in self.values.items():
            if node not in self.absorbed:
                self._plan(value, regions)
        regions.sort(key=lambda region: self._position[region.sink])
        return Analysis(self.values, regions, self.refusals)

    def _plan(self, value: Value, regions: list[Region]) -> None:
        """Make ``value`` a region if it pays off and can be emitted; else split it at its op."""
        if value.is_root:
            return
        members = sorted(value.members(), key=self._position.__getitem__)
        emitted, reason = self._emitted(value, merges=len(members) > 1)
        if reason is None and len(members) > 1 and emitted is not None:
            reason = self.policy.verdict(emitted, self._parts_cost(value, emitted))
        if reason is None:
            regions.append(Region(value.node, value, members, emitted))
            return
        if reason:
            self.note(value.node, reason)
        for part in value.parts:
            self._plan(part, regions)

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
        if value.map.rank == 0 or not merges:
            return None, ""
        if shape is None or len(shape) - 2 < value.map.rank:
            return None, "it treats every channel alike and their number is unknown (pass example_inputs)"
        return depthwise(lift_rank(value.map, len(shape) - 2), int(shape[1])), None

    @staticmethod
    def _parts_cost(value: Value, emitted: ConvMap) -> Cost:
        """What the region's ops cost as they are, per output position of ``emitted``."""
        if value.uniform:
            return value.cost * emitted.out_channels
        return value.cost

    def _visit(self, node: Node) -> None:
        try:
            rule = self.registry.rule_for(node, self.owner)
        except Refused as refusal:
            self.note(node, refusal.reason)
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
        self.absorbed.update(ctx.absorbed)


def analyze(
    gm: GraphModule,
    registry: Registry = REGISTRY,
    policy: CostPolicy | MaximalPolicy | None = None,
) -> Analysis:
    """Abstract values for every node of ``gm`` and the regions they form."""
    return Walk(gm, registry, policy or CostPolicy()).run()
