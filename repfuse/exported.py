"""The ``torch.export`` front end: fuse an ``ExportedProgram``'s ATen graph.

The program's module (parameters as attributes, ``program.module()``) goes through the
same analysis and rewrite as a traced model; the rules registry holds the ATen ops
(``aten.conv2d``, ``aten.convolution``, ``aten.batch_norm``,
``aten._native_batch_norm_legit_no_training``, ``aten.add.Tensor``, ...) beside the
``torch.nn`` ones.  The result is exported again, with the same dynamic dims.
"""

from __future__ import annotations

import copy

import torch
from torch.export import Dim, ExportedProgram

from .analysis import Paths, analyze
from .describe import describe
from .errors import FuseError
from .module_pass import Options
from .report import RefusalRecord, Report, count
from .rewrite import rewrite


def _inputs(program: ExportedProgram, example_inputs: tuple | None) -> tuple[tuple, dict]:
    if example_inputs is not None:
        return example_inputs, {}
    if program.example_inputs is None:
        raise ValueError("this ExportedProgram keeps no example inputs: pass example_inputs to repfuse.fuse")
    args, kwargs = program.example_inputs
    return tuple(args), dict(kwargs)


def _dynamic_shapes(program: ExportedProgram, args: tuple, kwargs: dict) -> tuple | None:
    """The program's dynamic dims, as ``dynamic_shapes`` for exporting the fused module again."""
    if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    specs = []
    for node in placeholders:
        shape = getattr(node.meta.get("val"), "shape", ())
        specs.append({i: Dim.AUTO for i, size in enumerate(shape) if not isinstance(size, int)} or None)
    return tuple(specs) if any(specs) else None


def fuse_exported(program: ExportedProgram, example_inputs: tuple | None, options: Options) -> tuple[ExportedProgram, Report]:
    """A new ``ExportedProgram`` computing what ``program`` does, with its linear regions fused."""
    args, kwargs = _inputs(program, example_inputs)
    gm = copy.deepcopy(program.module())
    paths = Paths(gm)
    before = count(gm.graph, paths)
    analysis = analyze(gm.graph, paths, policy=options.policy)
    refusals = [RefusalRecord(describe(r.node, paths), r.reason) for r in analysis.refusals]
    rewritten = rewrite(gm.graph, paths, analysis)
    rewritten.install(gm)
    report = Report(before, count(gm.graph, Paths(gm)), rewritten.merges, refusals)
    try:
        fused = torch.export.export(gm, args, kwargs, dynamic_shapes=_dynamic_shapes(program, args, kwargs))
    except Exception as error:
        raise FuseError(f"the fused program could not be exported again: {str(error).splitlines()[0]}") from error
    return fused, report
