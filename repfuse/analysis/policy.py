"""When a merge pays off: the cost policy.

A merged convolution is not always cheaper than the ops it replaces: a depthwise 3x3
branch plus a dense 1x1 branch become a dense 3x3 (about 9x the MACs of the 1x1),
two 3x3 convolutions become a 5x5.  The policy compares, per output position,

    units = MACs + traffic_weight * (elements read + elements written)

of the merged convolution with the sum over the original ops, and keeps a region
apart where the merged form would cost more than ``(1 + margin)`` times as much.
Memory traffic is weighed because elementwise ops (BatchNorm, add, scale) do no
MACs but still cost a pass over memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algebra import ConvMap, Cost, cost


@dataclass(frozen=True)
class CostPolicy:
    """Merge only where the merged convolution costs at most ``1 + margin`` times the parts."""

    traffic_weight: float = 8.0
    margin: float = 0.10

    def units(self, c: Cost) -> float:
        return c.macs + self.traffic_weight * (c.reads + c.writes)

    def verdict(self, merged: ConvMap, parts: Cost) -> str | None:
        """``None`` if the merge pays off, else the reason it does not."""
        new, old = self.units(cost(merged)), self.units(parts)
        if new <= (1 + self.margin) * old:
            return None
        return (
            f"the cost policy keeps it apart: one {merged.describe()} would cost {new:,.0f} "
            f"MAC-equivalents per output position, the ops it replaces {old:,.0f}"
        )


@dataclass(frozen=True)
class MaximalPolicy:
    """Merge wherever the merge is exact, whatever it costs."""

    def verdict(self, merged: ConvMap, parts: Cost) -> str | None:
        return None


def resolve_policy(policy: object) -> CostPolicy | MaximalPolicy:
    """``"cost"`` (default), ``"maximal"``, or a policy object."""
    if policy == "cost":
        return CostPolicy()
    if policy == "maximal":
        return MaximalPolicy()
    if hasattr(policy, "verdict"):
        return policy
    raise ValueError(f"unknown policy {policy!r}: use 'cost', 'maximal' or a CostPolicy")
