"""Changing a map's channel grouping.

A map with ``G`` groups is the map with ``G' | G`` groups whose weight is block
diagonal: output channel ``o`` of old group ``a = o // (C_out/G)`` keeps its ``C_in/G``
weights at input offset ``(a mod (G/G')) * C_in/G`` inside its new group, zeros
elsewhere.  The result computes the same outputs with ``G/G'`` times the MACs.
"""

from __future__ import annotations

import torch

from .convmap import ConvMap, require


def expand_groups(m: ConvMap, groups: int) -> ConvMap:
    """``m`` with ``groups`` groups; precondition: ``groups`` divides ``m.groups``."""
    if groups == m.groups:
        return m
    require(not m.transposed, "regrouping a transposed convolution is not supported")
    require(m.groups % groups == 0, f"{groups} groups do not divide {m.groups} groups")
    ratio = m.groups // groups
    out_per_group = m.out_channels // m.groups
    in_per_group = m.weight.shape[1]
    kernel = m.kernel_size
    # old[n, r, o, i, *k]: new group n, old group r inside it, its output o and input i.
    old = m.weight.reshape(groups, ratio, out_per_group, in_per_group, *kernel)
    eye = torch.eye(ratio, dtype=old.dtype, device=old.device)
    new = torch.einsum("nroi...,rs->nrosi...", old, eye)
    weight = new.reshape(m.out_channels, ratio * in_per_group, *kernel)
    return m.with_(weight=weight, groups=groups)
