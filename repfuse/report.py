"""What ``fuse`` did: each merge, each refusal with its reason, and counts before and after."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .analysis.paths import Paths
from .rewrite import Merge

aten = torch.ops.aten

# The kind of each op the counts tell apart, keyed by the op object.
_KINDS = {
    **dict.fromkeys(
        (
            F.conv1d,
            F.conv2d,
            F.conv3d,
            F.conv_transpose1d,
            F.conv_transpose2d,
            F.conv_transpose3d,
            aten.conv1d.default,
            aten.conv2d.default,
            aten.conv3d.default,
            aten.conv1d.padding,
            aten.conv2d.padding,
            aten.conv3d.padding,
            aten.conv_transpose1d.default,
            aten.conv_transpose2d.input,
            aten.conv_transpose3d.input,
            aten.convolution.default,
        ),
        "convs",
    ),
    **dict.fromkeys((F.linear, aten.linear.default), "linears"),
    **dict.fromkeys(
        (F.batch_norm, aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default), "batch_norms"
    ),
    **dict.fromkeys(
        (operator.add, operator.iadd, torch.add, torch.Tensor.add, torch.Tensor.add_, aten.add.Tensor, aten.add_.Tensor),
        "adds",
    ),
}
_MODULE_KINDS = ((_ConvNd, "convs"), (nn.Linear, "linears"), (_BatchNorm, "batch_norms"))


@dataclass(frozen=True)
class Counts:
    """Graph nodes, ops by kind and parameters (elements) of a model."""

    nodes: int = 0
    convs: int = 0
    linears: int = 0
    batch_norms: int = 0
    adds: int = 0
    parameters: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))


def _kind(node, paths: Paths) -> str | None:
    if node.op == "call_module":
        module = paths[node.target]
        return next((kind for cls, kind in _MODULE_KINDS if isinstance(module, cls)), None)
    if node.op == "call_method":
        return _KINDS.get(getattr(torch.Tensor, node.target, None))
    if node.op == "call_function":
        return _KINDS.get(node.target)
    return None


def count(graph: Graph, paths: Paths) -> Counts:
    """Count what ``graph`` runs, its modules found in ``paths`` (parameters are counted apart)."""
    kinds = {"convs": 0, "linears": 0, "batch_norms": 0, "adds": 0}
    for node in graph.nodes:
        kind = _kind(node, paths)
        if kind is not None:
            kinds[kind] += 1
    return Counts(nodes=len(graph.nodes), **kinds)


@dataclass(frozen=True)
class RefusalRecord:
    """``op`` was kept apart from its neighbours because of ``reason``."""

    op: str
    reason: str


@dataclass(frozen=True)
class KeptModule:
    """A submodule ``torch.fx`` did not trace through, and why (its own children may be fused)."""

    module: str
    reason: str


@dataclass
class Report:
    """Every merge, refusal and untraced module of one ``fuse`` call, with counts before and after."""

    before: Counts = field(default_factory=Counts)
    after: Counts = field(default_factory=Counts)
    merges: list[Merge] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)
    kept: list[KeptModule] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def refusals_of(self, op: str) -> list[str]:
        """The reasons given for the op whose description starts with ``op``."""
        return [r.reason for r in self.refusals if r.op.split(" ")[0] == op]

    def include(self, child: "Report", prefix: str) -> None:
        """Add the report of submodule ``prefix`` to this one, its names made full."""

        def full(name: str | None) -> str | None:
            return name if not prefix or name is None else f"{prefix}.{name}"

        self.before += child.before
        self.after += child.after
        self.merges += [
            replace(m, module=full(m.module), members=tuple(full(x) for x in m.members)) for m in child.merges
        ]
        self.refusals += [replace(r, op=full(r.op)) for r in child.refusals]
        self.kept += [replace(k, module=full(k.module) if k.module else prefix) for k in child.kept]

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
        if self.kept:
            lines.append(f"{len(self.kept)} module(s) not traced through:")
            for kept in self.kept:
                lines.append(f"  {kept.module or '(the model)'}: {kept.reason}")
        return "\n".join(lines)
