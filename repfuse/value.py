"""Abstract values: what the analysis knows about one node of the graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch.fx import Node

from .algebra import ConvMap, require


@dataclass(frozen=True, eq=False)
class Value:
    """``node`` computes ``map`` applied to the tensor of ``root`` (``map=None``: the identity).

    ``parts`` are the values ``node`` was made from; together with ``node`` they are
    the region of the graph that a single convolution of ``root`` can replace.  A
    value with ``node=None`` is the root itself: a tensor the analysis does not see into.
    ``pin`` says why this value must not be merged with any other op (``None``: it may).
    """

    root: Node
    map: ConvMap | None = None
    node: Node | None = None
    parts: tuple["Value", ...] = ()
    pin: str | None = None

    @staticmethod
    def of_root(node: Node) -> "Value":
        """The tensor of ``node``, as the identity map of itself."""
        return Value(root=node)

    @property
    def is_root(self) -> bool:
        return self.node is None

    def members(self) -> Iterator[Node]:
        """The op nodes whose results this value merges (each once)."""
        seen: set[Node] = set()
        stack = [self]
        while stack:
            value = stack.pop()
            if value.node is not None and value.node not in seen:
                seen.add(value.node)
                yield value.node
                stack.extend(value.parts)


@dataclass(frozen=True)
class Refusal:
    """``node`` was not merged with its neighbours, for ``reason``."""

    node: Node
    reason: str


def one_root(values: tuple[Value, ...] | list[Value]) -> Node:
    """The root all ``values`` are maps of; refuses values computed from different tensors."""
    roots = {value.root for value in values}
    require(
        len(roots) == 1,
        "the operands are computed from different tensors ("
        + ", ".join(sorted(f"`{root.name}`" for root in roots))
        + ")",
    )
    return roots.pop()
