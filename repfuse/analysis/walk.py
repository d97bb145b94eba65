"""One walk over the graph in topological order, giving each node an abstract value.

A node with a rule gets the value its rule computes from its arguments' values; an
argument's value is merged into it only when that argument has no other reader (else
the argument is kept, and merging starts again from it as a new root).  A node whose
rule refuses, and a node with no rule, is opaque: it reads its arguments as tensors,
so each argument that has a value ends a region there.

The regions are the values nobody merged further: each is one convolution of its root.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.fx import GraphModule, Node

from ..algebra import Refused
from ..rules import REGISTRY, Opaque, Registry
from ..value import Refusal, Value
from .context import NodeContext, fetch_attr
from .ranks import known_ndim

_CALLS = ("call_module", "call_function", "call_method")


@dataclass
class Region:
    """A connected set of ops that together compute ``value``; ``sink`` is the last of them."""

    sink: Node
    value: Value
    members: list[Node]


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

    def __init__(self, owner: GraphModule, registry: Registry):
        self.owner = owner
        self.registry = registry
        self.values: dict[Node, Value] = {}
        self.absorbed: set[Node] = set()
        self._notes: dict[tuple[Node, str], Refusal] = {}
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
        position = {}
        for index, node in enumerate(self.owner.graph.nodes):
            position[node] = index
            if node.op in _CALLS:
                self._visit(node)
        regions = [
            Region(node, value, sorted(value.members(), key=position.__getitem__))
            for node, value in self.values.items()
            if node not in self.absorbed
        ]
        return Analysis(self.values, regions, self.refusals)

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


def analyze(gm: GraphModule, registry: Registry = REGISTRY) -> Analysis:
    """Abstract values for every node of ``gm`` and the regions they form."""
    return Walk(gm, registry).run()
