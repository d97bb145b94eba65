"""Abstract values: what the analysis knows about one node of the graph."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator

from torch.fx import Node

from .algebra import ZERO, ConvMap, Cost, PendingSum, Refused, is_identity, scalar_affine

IDENTITY = scalar_affine(1.0)
RELEASED = scalar_affine(0.0)  # the map of a value whose weights were let go (see Value.released)


@dataclass(frozen=True, eq=False)
class Value:
    """``node`` computes ``map`` applied to the tensor of ``root``.

    ``form`` is that map, or a sum of maps not computed yet (see
    :class:`~repfuse.algebra.PendingSum`): ``map`` computes it when first asked for,
    ``geometry`` tells its shape without computing it.

    A ``uniform`` map has one channel and applies to every channel of ``root`` alike
    (identity, scalar affine, padding, average pooling), whatever their number.
    ``parts`` are the values ``node`` was made from; with ``node`` and ``via`` (ops
    merged along the way that have no value of their own, such as the ``torch.stack``
    before a ``.sum(0)``) they are the region of the graph one convolution of ``root``
    can replace.  ``cost`` is what the region's ops cost as they are, per output
    position (per channel, for a uniform map); ``convolves`` whether one of them is a
    convolution, linear layer or pooling.  ``spatial_dims`` is the number of spatial
    dims of the tensor where an op fixes it (a convolution or pooling of rank ``r``
    reads ``N, C`` and ``r`` spatial dims; the batch dim is assumed).  A value with
    ``node=None`` is the root itself.  ``pin`` says why this value must not merge with
    any other op.
    """

    root: Node
    form: ConvMap | PendingSum = IDENTITY
    uniform: bool = True
    node: Node | None = None
    parts: tuple["Value", ...] = ()
    via: tuple[Node, ...] = ()
    cost: Cost = ZERO
    convolves: bool = False
    spatial_dims: int | None = None
    pin: str | None = None

    def released(self) -> "Value":
        """This value without its maps (nor its parts'): what a fold that consumed it keeps.

        A fold (BatchNorm, scale, identity) always pays off when its input does, so its
        input is never emitted apart from it and its float64 weights need not be held.
        """
        if self.node is None or self.is_released:
            return self
        return Value(
            root=self.root,
            form=RELEASED,
            uniform=self.uniform,
            node=self.node,
            parts=tuple(part.released() for part in self.parts),
            via=self.via,
            cost=self.cost,
            convolves=self.convolves,
            spatial_dims=self.spatial_dims,
        )

    @functools.cached_property
    def map(self) -> ConvMap:
        """The map ``node`` applies to ``root``'s tensor."""
        return self.form.evaluate() if isinstance(self.form, PendingSum) else self.form

    @property
    def geometry(self) -> ConvMap:
        """A map with ``map``'s channels, kernel, stride, padding and groups (its weights may have no values)."""
        return self.form.geometry if isinstance(self.form, PendingSum) else self.form

    @property
    def is_released(self) -> bool:
        return self.form is RELEASED

    @staticmethod
    def of_root(node: Node) -> "Value":
        """The tensor of ``node``, as the identity map of itself."""
        return Value(root=node)

    @property
    def is_root(self) -> bool:
        return self.node is None

    @functools.cached_property
    def is_identity(self) -> bool:
        return self.uniform and is_identity(self.map)

    def members(self) -> Iterator[Node]:
        """The op nodes whose results this value merges (each once)."""
        seen: set[Node] = set()
        stack = [self]
        while stack:
            value = stack.pop()
            if value.node is not None and value.node not in seen:
                seen.add(value.node)
                yield value.node
                for node in value.via:
                    if node not in seen:
                        seen.add(node)
                        yield node
                stack.extend(value.parts)


@dataclass(frozen=True)
class Refusal:
    """``node`` was not merged with its neighbours, for ``reason``."""

    node: Node
    reason: str


def one_root(values: tuple[Value, ...] | list[Value]) -> Node:
    """The root all ``values`` are maps of; refuses values computed from different tensors."""
    roots = {value.root for value in values}
    if len(roots) != 1:
        raise Refused(
            "the operands are computed from different tensors ("
            + ", ".join(sorted(f"`{root.name}`" for root in roots))
            + ")"
        )
    return roots.pop()
