"""What ``fuse`` did: each merge, each refusal with its reason, and counts before and after."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .rewrite import Merge

_CONV_FUNCTIONS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
}
_ADDS = {operator.add, operator.iadd, torch.add, torch.Tensor.add, torch.Tensor.add_}


@dataclass(frozen=True)
class Counts:
    """Graph nodes, ops by kind and parameters (elements) of a traced model."""

    nodes: int
    convs: int
    linears: int
    batch_norms: int
    adds: int
    parameters: int


def _op(node, gm: GraphModule):
    if node.op == "call_module":
        return type(gm.get_submodule(node.target))
    if node.op == "call_method":
        return getattr(torch.Tensor, node.target, None)
    return node.target


def count(gm: GraphModule) -> Counts:
    """Count what ``gm``'s graph runs."""
    convs = linears = batch_norms = adds = 0
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        op = _op(node, gm)
        if isinstance(op, type):
            convs += issubclass(op, _ConvNd)
            linears += issubclass(op, nn.Linear)
            batch_norms += issubclass(op, _BatchNorm)
        else:
            convs += op in _CONV_FUNCTIONS
            linears += op is F.linear
            batch_norms += op is F.batch_norm
            adds += op in _ADDS
    parameters = sum(p.numel() for p in gm.parameters())
    return Counts(len(gm.graph.nodes), convs, linears, batch_norms, adds, parameters)


@dataclass(frozen=True)
class RefusalRecord:
    """``op`` was kept apart from its neighbours because of ``reason``."""

    op: str
    reason: str


@dataclass
class Report:
    """Every merge and refusal of one ``fuse`` call, and counts before and after it."""

    before: Counts
    after: Counts
    merges: list[Merge] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def refusals_of(self, op: str) -> list[str]:
        """The reasons given for the op whose description starts with ``op``."""
        return [r.reason for r in self.refusals if r.op.split(" ")[0] == op]

    def __str__(self) -> str:
        lines = [f"{'':14}{'before':>12}{'after':>12}"]
        for key in ("nodes", "convs", "linears", "batch_norms", "adds", "parameters"):
            lines.append(f"{key:14}{getattr(self.before, key):>12,}{getattr(self.after, key):>12,}")
        lines.append("")
        lines.append(f"{len(self.merges)} merge(s):")
        for merge in self.merges:
            target = merge.module or "(its input)"
            lines.append(f"  {target} <- {', '.join(merge.members)}")
            lines.append(f"      = {merge.result}")
        lines.append(f"{len(self.refusals)} refusal(s):")
        for refusal in self.refusals:
            lines.append(f"  {refusal.op}: {refusal.reason}")
        return "\n".join(lines)
