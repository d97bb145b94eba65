"""The ``repfuse`` command line.

    python -m repfuse demo [--variant s0] [--size 224]
    python -m repfuse fuse MODEL -o OUT --input-shape 1,3,224,224

``MODEL`` is a file saved with ``torch.save(model)`` or ``package.module:factory``.
Bad input gets a one-line error naming the fix and exit code 1.  :func:`run` returns
what a command says and its exit code; the program (``repfuse/__main__.py``) writes
them to the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import api
from .errors import FuseError
from .models import VARIANTS, calibrate_batch_norms, mobileone


class CliError(Exception):
    """A problem with what the user gave: printed as one line, exit code 1."""


def median_latency(model: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``model(x)`` in milliseconds."""
    times = []
    with torch.no_grad():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _demo(args: argparse.Namespace) -> str:
    """The demo's before/after table."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (1, 3, args.size, args.size)
    model = calibrate_batch_norms(mobileone(args.variant), (8, 3, args.size, args.size), seed=args.seed)
    x = torch.randn(shape)

    start = time.perf_counter()
    fused, report = api.fuse(model, x, verify=True, return_report=True)
    fuse_seconds = time.perf_counter() - start

    with torch.no_grad():
        reference = model.double()(x.double())
        model.float()
        error = api.relative_error(fused(x), reference)
        unfused_error = api.relative_error(model(x), reference)
    latency = [median_latency(m, x, args.repeats) for m in (model, fused)]

    before, after = report.before, report.after
    rows = [
        ("graph nodes", before.nodes, after.nodes),
        ("convolutions", before.convs, after.convs),
        ("batch norms", before.batch_norms, after.batch_norms),
        ("adds", before.adds, after.adds),
        ("parameters", before.parameters, after.parameters),
    ]
    width = 38
    latency_label = f"latency, batch 1 (ms, median of {args.repeats})"
    lines = [
        f"MobileOne-{args.variant.upper()}, train-time form, random weights, input {'x'.join(map(str, shape))}",
        "",
        f"{'':{width}}{'train-time':>12}{'fused':>12}",
        *(f"{label:{width}}{a:>12,}{b:>12,}" for label, a, b in rows),
        f"{'max relative error (float32)':{width}}{unfused_error:>12.1e}{error:>12.1e}",
        f"{latency_label:{width}}{latency[0]:>12.2f}{latency[1]:>12.2f}",
        "",
        f"fused and verified against the train-time model in {fuse_seconds:.2f} s "
        f"({len(report.merges)} merges, {len(report.refusals)} refusals); {latency[0] / latency[1]:.2f}x faster "
        f"on {torch.get_num_threads()} threads",
        "errors are relative to max|output| of the float64 train-time model",
    ]
    return "\n".join(lines)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape of positive sizes like 1,3,224,224")
    return shape


def load_model(spec: str) -> nn.Module:
    """The model a file (``torch.save(model)``) or a ``package.module:factory`` names."""
    if os.path.exists(spec):
        try:
            model = torch.load(spec, map_location="cpu", weights_only=False)
        except Exception as error:
            raise CliError(f"cannot load {spec}: {_line(error)} (save the model with torch.save(model))") from None
        what = f"{spec} holds"
    elif ":" in spec and not spec.endswith(".pt"):
        module_name, _, factory_name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as error:
            raise CliError(f"cannot find {spec}: {_line(error)} (give package.module:factory)") from None
        try:
            model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
        except Exception as error:
            raise CliError(f"{spec}() failed: {_line(error)}") from None
        what = f"{spec} gives"
    else:
        raise CliError(f"no such file: {spec} (give a file saved with torch.save(model), or package.module:factory)")
    if not isinstance(model, nn.Module):
        hint = " (a state_dict: save the model itself with torch.save(model))" if isinstance(model, dict) else ""
        raise CliError(f"{what} a value of type {type(model).__name__}, not a torch.nn.Module{hint}")
    return model


def _line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _fuse(args: argparse.Namespace) -> str:
    """Fuse, verify and save the model; the report and what was done."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.eval:
        model.eval()
    elif any(m.training and m.track_running_stats for m in model.modules() if isinstance(m, _BatchNorm)):
        raise CliError("the model is in training mode, so its BatchNorms cannot be folded: pass --eval")
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    x = torch.randn(args.input_shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    shape = "x".join(map(str, args.input_shape))
    try:
        fused, report = api.fuse(model, x, return_report=True, policy=args.policy)
        error = api.check_equivalence(model, fused, (x,))
    except ValueError as error:
        if "do not fit" in str(error):
            raise CliError(f"the model does not accept an input of shape {shape}: give an --input-shape that fits") from None
        raise CliError(_line(error)) from None
    except FuseError as error:
        raise CliError(_line(error)) from None
    untraced = next((k for k in report.kept if k.module == ""), None)
    if untraced is not None and not report.merges:
        raise CliError(f"nothing to fuse: {untraced.reason.split(': kept')[0]}")
    torch.save(fused, args.output)
    return "\n".join(
        [
            str(report),
            "",
            f"verified on a random {shape} input: max relative error {error:.2e}",
            f"saved the fused model to {args.output} (load it with torch.load(path, weights_only=False))",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repfuse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fuse a train-time MobileOne and compare it with the original")
    demo.add_argument("--variant", choices=sorted(VARIANTS), default="s0", help="MobileOne variant (default: s0)")
    demo.add_argument("--size", type=int, default=224, help="input height and width (default: 224)")
    demo.add_argument("--repeats", type=int, default=20, help="timed runs per model (default: 20)")
    demo.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(run=_demo)

    fuse = commands.add_parser("fuse", help="fuse a saved model or a model factory, verify it and save it")
    fuse.add_argument("model", help="a file saved with torch.save(model), or package.module:factory")
    fuse.add_argument("-o", "--output", required=True, help="where to save the fused model")
    fuse.add_argument("--input-shape", type=_shape, required=True, help="shape of a random input, e.g. 1,3,224,224")
    fuse.add_argument("--policy", choices=["cost", "maximal"], default="cost", help="which exact merges to make")
    fuse.add_argument("--eval", action="store_true", help="put the model in eval mode first")
    fuse.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    fuse.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")
    fuse.set_defaults(run=_fuse)
    return parser


@dataclass(frozen=True)
class Outcome:
    """What a command says: its exit code, its text, or a one-line error."""

    code: int
    text: str = ""
    error: str = ""


def run(argv: Sequence[str] | None = None) -> Outcome:
    """Run the command ``argv`` names (usage errors are argparse's: it exits with code 2)."""
    args = build_parser().parse_args(argv)
    try:
        return Outcome(0, text=args.run(args))
    except CliError as error:
        return Outcome(1, error=f"error: {error}")
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        return Outcome(
            1, error=f"error: unexpected {type(error).__name__}: {_line(error)} (rerun with --debug for the traceback)"
        )
