"""The rank of a node's tensor, where the graph says it without running the model."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import Node

from .paths import Paths


def _flattened_ndim(start_dim: object, end_dim: object) -> int | None:
    if isinstance(start_dim, int) and start_dim >= 0 and end_dim == -1:
        return start_dim + 1
    return None


def node_shape(node: Node) -> tuple[int, ...] | None:
    """``node``'s tensor shape where shape propagation (or ``torch.export``) recorded it."""
    for key in ("tensor_meta", "val"):
        shape = getattr(node.meta.get(key), "shape", None)
        if shape is not None:
            try:
                return tuple(int(size) for size in shape)
            except TypeError:  # a symbolic size
                return None
    return None


def known_ndim(node: Node, paths: Paths) -> int | None:
    """``node``'s tensor rank from shape propagation, or from a flatten/view/reshape."""
    shape = node_shape(node)
    if shape is not None:
        return len(shape)
    if node.op == "call_module":
        module = paths[node.target]
        if isinstance(module, nn.Flatten):
            return _flattened_ndim(module.start_dim, module.end_dim)
        return None
    if (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    ):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return _flattened_ndim(start, end)
    if node.op == "call_method" and node.target in ("view", "reshape") and not node.kwargs:
        sizes = node.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            return len(sizes[0])
        return len(sizes) if sizes else None
    return None
