"""The ``repfuse`` command line: ``python -m repfuse demo``."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import torch

from . import api
from .models import VARIANTS, calibrate_batch_norms, mobileone


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


def _demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (1, 3, args.size, args.size)
    print(f"MobileOne-{args.variant.upper()}, train-time form, random weights, input {'x'.join(map(str, shape))}")
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
    print()
    width = 38
    print(f"{'':{width}}{'train-time':>12}{'fused':>12}")
    for label, a, b in rows:
        print(f"{label:{width}}{a:>12,}{b:>12,}")
    print(f"{'max relative error (float32)':{width}}{unfused_error:>12.1e}{error:>12.1e}")
    label = f"latency, batch 1 (ms, median of {args.repeats})"
    print(f"{label:{width}}{latency[0]:>12.2f}{latency[1]:>12.2f}")
    print()
    print(
        f"fused in {fuse_seconds:.2f} s ({len(report.merges)} merges, {len(report.refusals)} refusals); "
        f"verified against the train-time model; {latency[0] / latency[1]:.2f}x faster "
        f"on {torch.get_num_threads()} threads"
    )
    print("errors are relative to max|output| of the float64 train-time model")
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
