"""Ops that write into tensors, and whether a region may move across them.

A region is replaced by one new op placed at its last op (its *sink*), reading its
root there.  That new op reads what the region's ops read only if nothing writes
into the root's memory between the region's first op and its sink.  A region that
amounts to its root (no op left) hands the root itself to the sink's readers, which
is the same only if, from the region's first op on, nothing writes into either.

An op *writes* into a tensor when it is ``a += b`` and the like (``operator.iadd``,
``operator.setitem``), a method or ``torch`` function named with a trailing ``_``
(``x.add_(1)``, ``torch.relu_``), an ATen op whose schema says so, a call with
``inplace=True`` (a function's argument or a module's attribute), or a call with
``out=``.  A module or function from outside ``torch`` (a module with a rule
aside) may do anything to its tensor arguments, so it counts as writing into them.

Two tensors may share memory when their *storages* meet: a placeholder, an
attribute and the result of an op known to return a new tensor (a convolution,
BatchNorm, out-of-place arithmetic, ..., an ATen op whose schema gives its result no
alias) each have their own; any other op may return one of its inputs or a view of
it, so its result has its inputs' storages.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, Node
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

_WRITING_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.imatmul,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.setitem,
}

#: Activation modules with an ``inplace`` flag: their result is a new tensor unless it is set.
IN_PLACE_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Mish,
    nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU,
)  # fmt: skip
# Modules whose result is always a new tensor.
_NEW_TENSOR_MODULES = (
    _ConvNd, nn.Linear, _BatchNorm, _AvgPoolNd, _MaxPoolNd, _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd,
    nn.GELU, nn.Sigmoid, nn.Tanh,
)  # fmt: skip

# Functions and methods whose result is a new tensor (those with ``inplace`` only without it).
_NEW_TENSOR_FUNCTIONS: set[Callable] = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.matmul,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.matmul, torch.cat, torch.stack,
    torch.sum, torch.mean, torch.relu, torch.sigmoid, torch.tanh,
    torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
    F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
    F.linear, F.batch_norm, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool2d,
    F.relu, F.relu6, F.hardtanh, F.hardswish, F.silu, F.mish, F.leaky_relu, F.elu, F.gelu,
}  # fmt: skip
_NEW_TENSOR_METHODS = {"add", "sub", "mul", "div", "neg", "matmul", "sum", "mean", "relu", "sigmoid", "tanh", "clone"}


@functools.lru_cache(maxsize=None)
def _parameters(function: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a Python signature
        return None


def _argument(function: Callable, node: Node, name: str) -> Any:
    """The argument ``name`` of ``node``'s call of ``function`` (``None`` if not given)."""
    if name in node.kwargs:
        return node.kwargs[name]
    signature = _parameters(function)
    if signature is None or name not in signature.parameters:
        return None
    try:
        return signature.bind_partial(*node.args, **node.kwargs).arguments.get(name)
    except TypeError:
        return None


def _from_torch(thing: Any) -> bool:
    """Whether ``thing`` (a function, method or class) is PyTorch's or Python's operators'."""
    module = getattr(thing, "__module__", None) or getattr(getattr(thing, "__objclass__", None), "__module__", None)
    return module in ("torch", "_operator", "operator", "math") or (module or "").startswith("torch.")


def _outs(node: Node) -> list[Node]:
    out = node.kwargs.get("out")
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, Node)]
    return [out] if isinstance(out, Node) else []


def written(node: Node, module_of: Callable[[Node], nn.Module], known: Callable[[nn.Module], bool]) -> list[Node]:
    """The tensors ``node`` may write into (its result aside).

    ``known(module)``: a module whose call the analysis reads as a pure function (it has a rule).
    """
    inputs = [arg for arg in node.args if isinstance(arg, Node)]
    outs = _outs(node)
    if node.op == "call_module":
        module = module_of(node)
        if getattr(module, "inplace", False) is True:
            return inputs
        return [] if known(module) or _from_torch(type(module)) else node.all_input_nodes
    if node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.startswith("_"):
            return inputs[:1] + outs
        return outs
    if node.op != "call_function":
        return []
    target = node.target
    if target in _WRITING_OPERATORS:
        return inputs[:1]
    if isinstance(target, torch._ops.OpOverload):
        return [
            node.args[i] if i < len(node.args) else node.kwargs.get(a.name)
            for i, a in enumerate(target._schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        ]
    if not _from_torch(target):
        return node.all_input_nodes  # a function of the model's own, wrapped by torch.fx
    name = getattr(target, "__name__", "")
    if name.endswith("_") and not name.startswith("_"):
        return inputs[:1] + outs
    if _argument(target, node, "inplace") is True:
        return inputs[:1] + outs
    return outs


def returns_new_tensor(node: Node, module_of: Callable[[Node], nn.Module]) -> bool:
    """Whether ``node``'s result is a tensor of its own, never one of its inputs or a view of one."""
    if node.op in ("placeholder", "get_attr"):
        return True
    if node.op == "call_module":
        module = module_of(node)
        if isinstance(module, IN_PLACE_ACTIVATIONS):
            return not module.inplace
        return isinstance(module, _NEW_TENSOR_MODULES)
    if node.op == "call_method":
        return node.target in _NEW_TENSOR_METHODS and "out" not in node.kwargs
    if node.op != "call_function":
        return False
    if isinstance(node.target, torch._ops.OpOverload):  # its schema says which results alias an input
        return all(result.alias_info is None for result in node.target._schema.returns)
    if node.target in _NEW_TENSOR_FUNCTIONS:
        return _argument(node.target, node, "inplace") is not True and not _outs(node)
    return False


class Writes:
    """The ops of a graph that write into tensors, indexed by the storages they may write into.

    Built once per graph; for a graph without writes (most) every question is answered
    at once, and otherwise each in a time logarithmic in the number of writes.
    """

    def __init__(
        self,
        graph: Graph,
        position: dict[Node, int],
        module_of: Callable[[Node], nn.Module],
        known: Callable[[nn.Module], bool],
    ):
        self._position = position
        writes = []
        for node in graph.nodes:
            if node.op in ("call_module", "call_method", "call_function"):
                targets = [t for t in written(node, module_of, known) if isinstance(t, Node)]
                if targets:
                    writes.append((node, targets))
        self._storages: dict[Node, frozenset[Node]] = {}
        self._into: dict[Node, list[tuple[int, Node, Node]]] = {}  # storage: (position, op, tensor), in order
        if not writes:
            return
        for node in graph.nodes:
            if returns_new_tensor(node, module_of):
                self._storages[node] = frozenset((node,))
            else:
                self._storages[node] = frozenset().union(*(self._storages[a] for a in node.all_input_nodes))
        for op, targets in writes:
            for target in targets:
                for storage in self._storages[target]:
                    self._into.setdefault(storage, []).append((position[op], op, target))

    def may_be_written(self, node: Node) -> bool:
        """Whether some op of the graph may write into ``node``'s result (at any time)."""
        return bool(self._into) and any(storage in self._into for storage in self._storages[node])

    def _first_write(self, start: int, stop: int, into: frozenset[Node], skip: set[Node]) -> tuple[Node, Node] | None:
        """The first op after ``start`` and before ``stop``, not in ``skip``, that writes where ``into`` lives."""
        found = None
        for storage in into:
            writes = self._into.get(storage, ())
            for position, op, target in writes[bisect.bisect_right(writes, start, key=lambda write: write[0]) :]:
                if position >= stop or (found is not None and position >= found[0]):
                    break
                if op not in skip:
                    found = (position, op, target)
                    break
        return found[1:] if found else None

    def hazard(self, root: Node, sink: Node, members: list[Node], identity: bool) -> str | None:
        """Why the region of ``members`` (first to ``sink``) on ``root`` may not be replaced, or ``None``."""
        if not self._into:
            return None
        first = self._position[members[0]]
        if identity:
            found = self._first_write(first, len(self._position), self._storages[root] | self._storages[sink], set(members))
            if found:
                op, target = found
                return f"`{op.name}` writes into `{target.name}`, which would then be `{root.name}` itself"
            return None
        found = self._first_write(first, self._position[sink], self._storages[root], set(members))
        if found:
            op, target = found
            return f"`{op.name}` writes into `{target.name}` between these ops, which read `{root.name}` before it"
        return None
