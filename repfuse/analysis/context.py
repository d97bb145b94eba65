"""What a rule sees of the analysis: the node, its arguments' values and its constants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn
from torch.fx import Node

from ..algebra import ConvMap, Cost, PendingSum, Refused
from ..value import Value, one_root
from .ranks import node_shape

if TYPE_CHECKING:
    from .walk import Walk


class NodeContext:
    """The :class:`~repfuse.rules.RuleContext` of one node during the walk."""

    def __init__(self, walk: "Walk", node: Node, pin: str | None):
        self.node = node
        self.absorbed: list[Node] = []
        self._walk = walk
        self._pin = pin

    def module(self) -> nn.Module:
        return self._walk.module_of(self.node)

    def prepared(self) -> Any:
        if self.node.op != "call_module":
            return None
        return self._walk.prepared.get(self.module())

    def root(self, arg: Any) -> Value:
        if not isinstance(arg, Node):
            raise Refused(f"expected a tensor, got {arg!r}")
        if self.is_constant(arg):
            raise Refused(f"`{arg.name}` is a constant, not a value computed from the input")
        return Value.of_root(arg)

    def value(self, arg: Any) -> Value:
        root = self.root(arg)
        known = self._walk.values.get(arg)
        if known is None:
            return root
        if self._pin is not None:
            self._walk.note(self.node, self._pin)
            return root
        if known.pin is not None:
            self._walk.note(arg, known.pin)
            return root
        if len(arg.users) > 1:
            readers = ", ".join(f"`{user.name}`" for user in arg.users)
            self._walk.note(arg, f"its result is read by {readers}, so it is kept and merging starts again from it")
            return root
        return known

    def is_constant(self, arg: Any) -> bool:
        return not isinstance(arg, Node) or self._walk.constants.is_constant(arg)

    def constant(self, arg: Any, what: str) -> Any:
        if isinstance(arg, Node):
            if not self._walk.constants.is_constant(arg):
                raise Refused(f"{what} is computed at run time (`{arg.name}`)")
            return self._walk.constants.value(arg)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.constant(item, what) for item in arg)
        return arg

    def ndim(self, node: Node) -> int | None:
        return self._walk.ndim(node)

    def shape(self, node: Node) -> tuple[int, ...] | None:
        return node_shape(node)

    def verdict(self, merged: ConvMap, parts: Cost) -> str | None:
        return self._walk.policy.verdict(merged, parts)

    def note(self, reason: str) -> None:
        self._walk.note(self.node, reason)

    def make(
        self,
        map: ConvMap | PendingSum,
        inputs: tuple[Value, ...],
        *,
        cost: Cost,
        uniform: bool = False,
        via: tuple[Node, ...] = (),
        convolves: bool = False,
        spatial_dims: int | None = None,
        fold: bool = False,
    ) -> Value:
        if spatial_dims is None:
            spatial_dims = next((v.spatial_dims for v in inputs if v.spatial_dims is not None), None)
        value = Value(
            root=one_root(inputs),
            form=map,
            uniform=uniform,
            node=self.node,
            parts=tuple(v.released() for v in inputs) if fold else tuple(inputs),
            via=via,
            cost=cost,
            convolves=convolves or any(v.convolves for v in inputs),
            spatial_dims=spatial_dims,
            pin=self._pin,
        )
        self.absorbed.extend(v.node for v in inputs if not v.is_root)
        return value
