"""``python -m benchmarks``: latency of the fused models and cost of the pass, in one run.

Prints the tables, checks the targets, and writes ``results.md``, ``results.json`` and
(with matplotlib) ``latency.png`` and ``pass_scaling.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

from . import latency, pass_cost

# glibc's malloc gives large blocks back to the system after each op by default, so every
# large activation is paged in anew; fx GraphModules (repfuse's and any other) suffer most.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4294967295", "MALLOC_TRIM_THRESHOLD_": "4294967295"}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="MobileOne-S0 and one zoo model, fewer rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--out", default="benchmarks/results", help="where to write the results")
    parser.add_argument("--compile", choices=["none", "s0", "all"], default="s0", help="models to torch.compile")
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's default malloc settings")
    return parser.parse_args(argv)


def _fmt(value, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def latency_table(rows) -> str:
    lines = [
        "| model | batch | form | ms (median) | spread | × train-time | × hand deploy | float32 error |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.note:
            lines.append(f"| {r.model} | {r.batch} | {r.form} | {r.note} | | | | |")
            continue
        lines.append(
            f"| {r.model} | {r.batch} | {r.form} | {r.ms:.2f} | {r.spread:.0%} | {r.vs_train:.3f} | "
            f"{_fmt(r.vs_deploy, '.3f')} | {_fmt(r.error, '.1e')} |"
        )
    return "\n".join(lines)


def by_process_lines(rows) -> str:
    return "\n".join(
        f"- {r.model}, batch {r.batch}: " + ", ".join(f"{m:.3f}" for m in r.vs_deploy_by_process)
        for r in rows
        if r.vs_deploy_by_process
    )


def scaling_table(points) -> str:
    lines = ["| stack | graph nodes | fuse (ms) | symbolic_trace (ms) | fuse / trace |", "|---|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.kind} | {p.nodes:,} | {p.fuse_ms:.1f} | {p.trace_ms:.1f} | {p.fuse_ms / p.trace_ms:.2f} |")
    return "\n".join(lines)


def targets(rows, slopes, versus, memory) -> list[tuple[str, str, bool]]:
    """``(target, measured, met)`` for each target of the benchmark."""
    checks = []
    fused = {(r.model, r.batch): r for r in rows if r.form == "repfuse"}
    for (model, batch), r in sorted(fused.items()):
        if r.vs_deploy is not None:
            checks.append((f"{model} batch {batch}: fused ≤ 1.02× hand deploy", f"{r.vs_deploy:.3f}×", r.vs_deploy <= 1.02))
    checks.append(
        (f"fuse on {versus['model']} < 2× symbolic_trace", f"{versus['ratio']:.2f}× ({versus['fuse_ms']:.0f} vs {versus['trace_ms']:.0f} ms)", versus["ratio"] < 2)
    )
    for kind, value in slopes.items():
        checks.append((f"pass time linear ({kind} stacks, log-log slope ≤ 1.1 from 1,000 nodes)", f"{value:.2f}", value <= 1.1))
    for m in memory:
        checks.append(
            (f"peak memory of fuse on {m['model']} ≤ 2× parameter bytes", f"{m['ratio']:.2f}× ({m['peak_above_baseline'] / 2**20:.0f} MiB of {m['parameter_bytes'] / 2**20:.0f} MiB)", m["ratio"] <= 2)
        )
    errors = {(r.model, r.form): r.error for r in rows if r.batch == rows[0].batch and r.error is not None}
    for (model, form), error in sorted(errors.items()):
        if form == "repfuse" and (model, "hand deploy") in errors:
            deploy = errors[(model, "hand deploy")]
            checks.append((f"{model}: float32 error of fused ≤ hand deploy's", f"{error:.1e} vs {deploy:.1e}", error <= deploy * 1.05 + 1e-9))
    return checks


def plots(out: Path, rows, points) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    models = sorted({r.model for r in rows})
    batches = sorted({r.batch for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        forms = [f for f in dict.fromkeys(r.form for r in rows if not r.note)]
        width = 0.8 / len(forms)
        for i, form in enumerate(forms):
            values = [next((r.vs_train for r in rows if r.model == m and r.batch == batch and r.form == form and not r.note), 0) for m in models]
            ax.bar([j + i * width for j in range(len(models))], values, width, label=form)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=30, ha="right")
        ax.set_ylabel("latency / train-time latency")
        ax.set_title(f"batch {batch}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    written.append("latency.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in sorted({p.kind for p in points}):
        series = [p for p in points if p.kind == kind]
        ax.loglog([p.nodes for p in series], [p.fuse_ms for p in series], "o-", label=f"fuse ({kind})")
        ax.loglog([p.nodes for p in series], [p.trace_ms for p in series], "x--", label=f"symbolic_trace ({kind})")
    ax.set_xlabel("graph nodes")
    ax.set_ylabel("ms")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pass_scaling.png", dpi=110)
    written.append("pass_scaling.png")
    return written


def main(argv=None) -> int:
    args = parse(argv if argv is not None else sys.argv[1:])
    if not args.system_malloc and any(os.environ.get(k) != v for k, v in TUNED_MALLOC.items()):
        env = {**os.environ, **TUNED_MALLOC}
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])], env)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        variants, zoo, batches, rounds = ["s0"], False, [1, 32], {1: 10, 32: 3}
        pairs, processes = {1: 5, 32: 2}, 2
        node_counts = [100, 300, 1100, 2200]
    else:
        variants, zoo, batches, rounds = ["s0", "s1", "s2", "s3", "s4"], True, [1, 32], {1: 40, 32: 8}
        pairs, processes = {1: 16, 32: 8}, 3
        node_counts = [100, 300, 1000, 2000, 5000, 10000, 20000]
    compile_for = {"none": set(), "s0": {"mobileone-s0"}, "all": {f"mobileone-{v}" for v in variants}}[args.compile]
    setting = (
        f"{datetime.date.today()}, {cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
        f"{'default' if args.system_malloc else 'tuned'} glibc malloc"
    )
    print(f"repfuse benchmarks: {setting}\n", flush=True)

    rows = latency.run(variants, zoo, batches, rounds, compile_for, pairs, processes)
    print(latency_table(rows), "\n\nrepfuse ÷ hand deploy, the median of each process:", flush=True)
    print(by_process_lines(rows), "\n", flush=True)
    versus = pass_cost.fuse_versus_trace("s0", rounds=9 if args.quick else 15)
    points = pass_cost.scaling(node_counts, rounds=3)
    slopes = {kind: pass_cost.slope([p for p in points if p.kind == kind]) for kind in ("repvgg", "mobileone")}
    print(scaling_table(points), "\n", flush=True)
    memory = [pass_cost.peak_memory(v, args.threads) for v in variants]

    checks = targets(rows, slopes, versus, memory)
    lines = [f"{'met' if met else 'MISSED':7} {name}: {measured}" for name, measured, met in checks]
    print("\n".join(lines))
    markdown = "\n\n".join(
        [
            f"# repfuse benchmarks\n\n{setting}. Reproduce with `python -m benchmarks{' --quick' if args.quick else ''}`.",
            "## Latency\n\nEvery form of a model is timed in the same rounds (the order rotating); ms is the "
            "median over rounds and spread the interquartile range over it; the ratios are medians of the "
            "ratios within each round, which cancel the machine's drift; the ratio of repfuse to the hand "
            f"deploy form (the target's comparison) is timed apart, in adjacent mirrored pairs "
            f"(repfuse, deploy, deploy, repfuse) in {processes} fresh processes ({pairs[batches[0]]} pairs each at "
            f"batch {batches[0]}, {pairs[batches[-1]]} at batch {batches[-1]}), the median of all pairs. The float32 "
            "error is relative to max|output| of the float64 train-time model, at batch 1.\n\n"
            + latency_table(rows)
            + "\n\nrepfuse ÷ hand deploy, the median of each process:\n\n"
            + by_process_lines(rows),
            f"## The pass\n\n`repfuse.fuse` on {versus['model']}: {versus['fuse_ms']:.0f} ms; "
            f"`torch.fx.symbolic_trace` alone: {versus['trace_ms']:.0f} ms ({versus['ratio']:.2f}×).\n\n"
            + scaling_table(points)
            + "\n\nLog-log slopes of fuse time against graph nodes (from 1,000 nodes): "
            + ", ".join(f"{kind} {value:.2f}" for kind, value in slopes.items())
            + "\n\nPeak memory of fuse above the baseline, median of three runs, each in a fresh process "
            + "(in parentheses, the smallest and largest ratio):\n\n"
            + "| model | parameters | peak memory of fuse above baseline | ratio |\n|---|---:|---:|---:|\n"
            + "\n".join(
                f"| {m['model']} | {m['parameter_bytes'] / 2**20:.1f} MiB | {m['peak_above_baseline'] / 2**20:.1f} MiB "
                f"| {m['ratio']:.2f} ({m['ratio_range'][0]:.2f}–{m['ratio_range'][1]:.2f}) |"
                for m in memory
            ),
            "## Targets\n\n" + "\n".join(f"- {'met' if met else '**missed**'}: {name}: {measured}" for name, measured, met in checks),
        ]
    )
    written = plots(out, rows, points)
    (out / "results.md").write_text(markdown + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "setting": setting,
                "latency": [r.to_dict() for r in rows],
                "fuse_versus_trace": versus,
                "scaling": pass_cost.as_dicts(points),
                "slopes": slopes,
                "memory": memory,
                "targets": [{"target": n, "measured": m, "met": met} for n, m, met in checks],
            },
            indent=2,
        )
    )
    print(f"\nwrote {', '.join(['results.md', 'results.json', *written])} to {out}")
    return 0
