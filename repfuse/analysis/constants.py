"""Constants computed in the graph: parameters and buffers reshaped, indexed or combined.

``x * self.gamma.view(1, -1, 1, 1)`` scales ``x`` by a constant even though the
multiplier is a node of the graph: a pure op whose inputs are all constants is
evaluated once, here, and treated as the constant it is.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
from torch.fx import Node
from torch.fx.node import map_arg

_PURE_FUNCTIONS = {
    operator.getitem,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    operator.pow,
    torch.reshape,
    torch.unsqueeze,
    torch.squeeze,
    torch.flatten,
    torch.sqrt,
    torch.rsqrt,
    torch.exp,
    torch.abs,
    torch.sigmoid,
    torch.tanh,
    torch.clamp,
    torch.reciprocal,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
_ATEN = torch.ops.aten
_PURE_FUNCTIONS |= {
    _ATEN.view.default,
    _ATEN.reshape.default,
    _ATEN._unsafe_view.default,
    _ATEN.unsqueeze.default,
    _ATEN.squeeze.dim,
    _ATEN.squeeze.default,
    _ATEN.flatten.using_ints,
    _ATEN.expand.default,
    _ATEN.permute.default,
    _ATEN.t.default,
    _ATEN.transpose.int,
    _ATEN.select.int,
    _ATEN.slice.Tensor,
    _ATEN.clone.default,
    _ATEN.detach.default,
    _ATEN._to_copy.default,
    _ATEN.add.Tensor,
    _ATEN.add.Scalar,
    _ATEN.sub.Tensor,
    _ATEN.sub.Scalar,
    _ATEN.mul.Tensor,
    _ATEN.mul.Scalar,
    _ATEN.div.Tensor,
    _ATEN.div.Scalar,
    _ATEN.neg.default,
    _ATEN.sqrt.default,
    _ATEN.rsqrt.default,
    _ATEN.reciprocal.default,
    _ATEN.exp.default,
    _ATEN.abs.default,
    _ATEN.sigmoid.default,
    _ATEN.tanh.default,
    _ATEN.pow.Tensor_Scalar,
}
_PURE_METHODS = {
    "view",
    "reshape",
    "unsqueeze",
    "squeeze",
    "flatten",
    "expand",
    "permute",
    "transpose",
    "contiguous",
    "detach",
    "clone",
    "float",
    "double",
    "half",
    "bfloat16",
    "to",
    "sqrt",
    "rsqrt",
    "exp",
    "abs",
    "sigmoid",
    "tanh",
    "clamp",
    "reciprocal",
    "neg",
    "add",
    "sub",
    "mul",
    "div",
    "pow",
}


def is_pure(node: Node) -> bool:
    """Whether ``node`` is a deterministic op without side effects that the folding evaluates."""
    if node.op == "call_function":
        return node.target in _PURE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _PURE_METHODS
    return False


class Constants:
    """Evaluates and remembers the constant nodes of a graph.

    ``fetch(path)`` is the attribute a ``get_attr`` node reads; ``written(node)`` tells
    whether something in the graph may write into ``node``'s result, which is then not
    a constant (its value depends on when it is read).
    """

    _UNKNOWN = object()

    def __init__(self, fetch: Callable[[str], Any], written: Callable[[Node], bool] = lambda node: False):
        self._fetch = fetch
        self._written = written
        self._cache: dict[Node, Any] = {}

    def is_constant(self, node: Node) -> bool:
        return self.value(node) is not self._UNKNOWN

    def value(self, node: Node) -> Any:
        """The constant ``node`` evaluates to, or ``Constants._UNKNOWN``."""
        if node not in self._cache:
            self._cache[node] = self._evaluate(node)
        return self._cache[node]

    def _evaluate(self, node: Node) -> Any:
        if self._written(node):
            return self._UNKNOWN
        if node.op == "get_attr":
            return self._fetch(node.target)
        if not is_pure(node) or not all(self.is_constant(arg) for arg in node.all_input_nodes):
            return self._UNKNOWN
        args = map_arg(node.args, self.value)
        kwargs = map_arg(node.kwargs, self.value)
        with torch.no_grad():
            try:
                if node.op == "call_method":
                    self_arg, *rest = args
                    return getattr(self_arg, node.target)(*rest, **kwargs)
                return node.target(*args, **kwargs)
            except Exception:  # a malformed op: leave it to run as it is
                return self._UNKNOWN
