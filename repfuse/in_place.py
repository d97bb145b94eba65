"""Activations that read a new convolution's output run in place.

A region's new module (convolution, transposed convolution, linear layer) returns a
new tensor.  Where its only reader is an activation that can work in place — a
module (ReLU, ReLU6, Hardtanh, Hardswish, Hardsigmoid, SiLU, Mish, LeakyReLU, ELU,
CELU, SELU) or ``torch.relu``, ``F.relu``, ``Tensor.relu`` — nothing else ever sees
that tensor, so the activation may overwrite it: the same values, one tensor fewer
to allocate per call.  A module called at several places runs in place only if
every call reads such a tensor; one with hooks, or one that is also held elsewhere
in the model, never does.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from .analysis.mutation import IN_PLACE_ACTIVATIONS
from .trace import has_hooks


def _reads_only_a_new_tensor(node: Node, built: set[str]) -> bool:
    """``node`` calls its module on the output of a built module, which nothing else reads."""
    if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], Node):
        return False
    source = node.args[0]
    return source.op == "call_module" and source.target in built and len(source.users) == 1


def _functional_in_place(node: Node) -> bool:
    """Make a ``torch.relu``/``F.relu``/``Tensor.relu`` node its in-place form; whether it was one."""
    if node.op == "call_function" and node.target is torch.relu:
        node.target = torch.relu_
    elif node.op == "call_function" and node.target is F.relu and not node.kwargs.get("inplace", False):
        node.kwargs = {**node.kwargs, "inplace": True}
    elif node.op == "call_method" and node.target == "relu":
        node.target = "relu_"
    else:
        return False
    return True


def run_activations_in_place(gm: GraphModule, built: set[str]) -> list[str]:
    """Make the activations of ``gm`` that may overwrite their input do so.

    ``built`` are the names of the modules the pass made.  Returns the names of the
    nodes and modules switched.  Module types are matched exactly: a subclass may use
    ``inplace`` otherwise.  ``gm`` is recompiled where a node changed.
    """
    holders = Counter(id(m) for _, m in gm.named_modules(remove_duplicate=False))
    safe: dict[str, bool] = {}
    switched = []
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method") and node.args and isinstance(node.args[0], Node):
            source = node.args[0]
            alone = len(node.args) == 1 and source.op == "call_module" and source.target in built
            if alone and len(source.users) == 1 and _functional_in_place(node):
                switched.append(node.name)
            continue
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if type(module) not in IN_PLACE_ACTIVATIONS:
            continue
        ok = _reads_only_a_new_tensor(node, built) and not has_hooks(module) and holders[id(module)] == 1
        safe[node.target] = safe.get(node.target, True) and ok
    if switched:
        gm.recompile()
    for name, ok in safe.items():
        if ok and not gm.get_submodule(name).inplace:
            gm.get_submodule(name).inplace = True
            switched.append(name)
    return switched
