"""Names of nodes and ops as a user reads them in a report."""

from __future__ import annotations

import torch
from torch.fx import Node

from .analysis.paths import Paths


def op_name(node: Node, paths: Paths) -> str:
    """The op a node runs: a module class, a function or a method name.

    ``paths`` holds the modules the graph calls.
    """
    if node.op == "call_module":
        module = paths[node.target]
        return type(module).__name__
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function":
        if isinstance(node.target, torch._ops.OpOverload):
            return str(node.target)  # aten.conv2d.default
        module = getattr(node.target, "__module__", None) or ""
        name = getattr(node.target, "__name__", str(node.target))
        if module.startswith("torch.nn.functional"):
            return f"F.{name}"
        if module == "_operator":
            return f"operator.{name}"
        if module.startswith("torch"):
            return f"torch.{name}"
        return name
    return node.op


def describe(node: Node, paths: Paths) -> str:
    """``layer1.conv (Conv2d)`` for a module call, ``add_1 (operator.add)`` otherwise."""
    where = node.target if node.op == "call_module" else node.name
    return f"{where} ({op_name(node, paths)})"
