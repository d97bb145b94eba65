"""What a map costs to run, per output position.

    MACs  = C_out * (C_in / G) * prod(kernel)          (ordinary convolution)
    MACs  = C_out * (C_in / G) * prod(kernel) / prod(stride)   (transposed)
    bytes = (weight + bias) elements * element size

Per output position (all channels at one spatial position), so maps with one output
size compare directly and a sum of branches costs the sum of their costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .convmap import ConvMap


@dataclass(frozen=True)
class Cost:
    """Multiply-accumulates per output position and parameter bytes."""

    macs: float
    weight_bytes: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.macs + other.macs, self.weight_bytes + other.weight_bytes)


def cost(m: ConvMap, element_size: int = 4) -> Cost:
    """The cost of running ``m`` once per output position, for ``element_size``-byte weights."""
    macs = m.out_channels * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if m.transposed:
        macs /= math.prod(m.stride)
    params = m.weight.numel() + (m.out_channels if m.bias is not None else 0)
    return Cost(float(macs), params * element_size)
