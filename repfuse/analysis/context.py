"""What a rule sees of the analysis: the node, its arguments' values and its constants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn
from torch.fx import Node

from ..algebra import ConvMap, Refused, require
from ..value import Value, one_root

if TYPE_CHECKING:
    from .walk import Walk


def fetch_attr(owner: nn.Module, target: str) -> Any:
    """The object a ``get_attr`` node reads, e.g. ``owner.layer1.weight``."""
    obj: Any = owner
    for name in target.split("."):
        obj = getattr(obj, name)
    return obj


class NodeContext:
    """The :class:`~repfuse.rules.RuleContext` of one node during the walk."""

    def __init__(self, walk: "Walk", node: Node, pin: str | None):
        self.node = node
        self.absorbed: list[Node] = []
        self._walk = walk
        self._pin = pin

    def module(self) -> nn.Module:
        return self._walk.owner.get_submodule(self.node.target)

    def root(self, arg: Any) -> Value:
        require(isinstance(arg, Node), f"expected a tensor, got {arg!r}")
        require(arg.op != "get_attr", f"`{arg.target}` is a constant tensor, not a value computed from the input")
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
            others = ", ".join(f"`{user.name}`" for user in arg.users if user is not self.node)
            self._walk.note(arg, f"its result is also read by {others}, so it is kept and merging starts again from it")
            return root
        self.absorbed.append(arg)
        return known

    def constant(self, arg: Any, what: str) -> Any:
        if isinstance(arg, Node):
            if arg.op == "get_attr":
                return fetch_attr(self._walk.owner, arg.target)
            raise Refused(f"{what} is computed at run time (`{arg.name}`)")
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.constant(item, what) for item in arg)
        return arg

    def ndim(self, node: Node) -> int | None:
        return self._walk.ndim(node)

    def make(self, map: ConvMap | None, inputs: tuple[Value, ...]) -> Value:
        return Value(root=one_root(inputs), map=map, node=self.node, parts=tuple(inputs), pin=self._pin)

