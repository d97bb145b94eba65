"""What a map costs to run, per output position (all channels at one spatial position).

    MACs   = C_out * (C_in / G) * prod(kernel)           (transposed: / prod(stride))
    reads  = C_in * prod(stride)     input elements per output position (each read once)
    writes = C_out

Costs of maps with one output size compare directly, and the cost of a sum of
branches is the sum of their costs.  A policy weighs memory traffic against MACs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .convmap import ConvMap


@dataclass(frozen=True)
class Cost:
    """Multiply-accumulates and elements read and written, per output position."""

    macs: float
    reads: float
    writes: float

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.macs + other.macs, self.reads + other.reads, self.writes + other.writes)

    def __mul__(self, factor: float) -> "Cost":
        return Cost(self.macs * factor, self.reads * factor, self.writes * factor)

    __rmul__ = __mul__


ZERO = Cost(0.0, 0.0, 0.0)


def cost(m: ConvMap) -> Cost:
    """The cost of running ``m`` once per output position."""
    macs = m.out_channels * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    positions = math.prod(m.stride)
    if m.transposed:
        return Cost(macs / positions, m.in_channels / positions, float(m.out_channels))
    return Cost(float(macs), float(m.in_channels * positions), float(m.out_channels))


def elementwise_cost(channels: int, operands: int = 1) -> Cost:
    """An elementwise op (BatchNorm, add, scale) over ``operands`` inputs of ``channels`` channels."""
    return Cost(float(channels), float(channels * operands), float(channels))
