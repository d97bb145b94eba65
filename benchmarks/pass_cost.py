"""The cost of the pass itself: time against graph size, and peak memory.

Time: ``repfuse.fuse`` and ``torch.fx.symbolic_trace`` alone on stacks of RepVGG and
MobileOne blocks from about 100 to 20,000 graph nodes, measured side by side; the
log-log slope of fuse time against nodes says whether the pass is linear.

Memory: the peak resident memory above the baseline while fusing MobileOne, each in a
fresh process, against the model's parameter bytes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from torch import nn
from torch.fx import symbolic_trace

import repfuse
from repfuse.models import MobileOneBlock, mobileone

from .timing import interleaved, median


def stack(kind: str, blocks: int, channels: int = 8) -> nn.Module:
    """``blocks`` RepVGG blocks, or MobileOne depthwise/pointwise pairs, in a row."""
    if kind == "repvgg":
        from tests.test_branches import RepVGGBlock

        layers = [RepVGGBlock(channels) for _ in range(blocks)]
    else:
        layers = []
        for _ in range(blocks // 2 or 1):
            layers.append(MobileOneBlock(channels, channels, 3, groups=channels, branches=2))
            layers.append(MobileOneBlock(channels, channels, 1, branches=2))
    return nn.Sequential(*layers).eval()


@dataclass
class ScalingPoint:
    kind: str
    nodes: int
    fuse_ms: float
    trace_ms: float


def slope(points: list[ScalingPoint], low: int = 1000) -> float:
    """The least-squares slope of log(fuse time) against log(nodes), from ``low`` nodes on."""
    xs = [math.log(p.nodes) for p in points if p.nodes >= low]
    ys = [math.log(p.fuse_ms) for p in points if p.nodes >= low]
    if len(xs) < 2:
        return float("nan")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


NODES_PER_BLOCK = {"repvgg": 8, "mobileone": 11.5}


def scaling(node_counts: list[int], rounds: int) -> list[ScalingPoint]:
    """Fuse and trace times of stacks of about each of ``node_counts`` graph nodes."""
    points = []
    for kind in ("repvgg", "mobileone"):
        for target in node_counts:
            model = stack(kind, max(1, round(target / NODES_PER_BLOCK[kind])))
            nodes = len(symbolic_trace(model).graph.nodes)
            times = interleaved(
                [("fuse", lambda: repfuse.fuse(model)), ("trace", lambda: symbolic_trace(model))], rounds, warmup=1
            )
            points.append(ScalingPoint(kind, nodes, median(times["fuse"]) * 1e3, median(times["trace"]) * 1e3))
    return points


def fuse_versus_trace(variant: str, rounds: int) -> dict:
    """``repfuse.fuse`` against ``symbolic_trace`` on one MobileOne, side by side."""
    model = mobileone(variant).eval()
    times = interleaved([("fuse", lambda: repfuse.fuse(model)), ("trace", lambda: symbolic_trace(model))], rounds)
    fuse_ms, trace_ms = median(times["fuse"]) * 1e3, median(times["trace"]) * 1e3
    return {"model": f"mobileone-{variant}", "fuse_ms": fuse_ms, "trace_ms": trace_ms, "ratio": fuse_ms / trace_ms}


_MEMORY_PROBE = """
import gc, json, sys, torch, repfuse
from repfuse.models import mobileone
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
torch.set_num_threads(int(sys.argv[2]))
repfuse.fuse(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3), torch.nn.BatchNorm2d(3)).eval())  # load what fuse uses
model = mobileone(sys.argv[1]).eval()
gc.collect()
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # restart the peak count
base = rss('VmRSS')
fused = repfuse.fuse(model)
peak = rss('VmHWM')
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({'peak_above_baseline': peak - base, 'parameter_bytes': params}))
"""


def peak_memory(variant: str, threads: int, runs: int = 3) -> dict:
    """Peak resident memory above the baseline while fusing one MobileOne, each run in a fresh process.

    The peak varies from run to run with how glibc's allocator places the pass's
    short-lived float64 kernels among the new weights; the median of ``runs`` is
    reported, with the smallest and largest.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # the pass's memory, default malloc
    peaks = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, variant, str(threads)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        data = json.loads(result.stdout.strip().splitlines()[-1])
        peaks.append(data["peak_above_baseline"])
    parameter_bytes = data["parameter_bytes"]
    peak = median(peaks)
    return {
        "model": f"mobileone-{variant}",
        "peak_above_baseline": peak,
        "parameter_bytes": parameter_bytes,
        "ratio": peak / parameter_bytes,
        "ratio_range": [min(peaks) / parameter_bytes, max(peaks) / parameter_bytes],
    }


def as_dicts(points: list[ScalingPoint]) -> list[dict]:
    return [asdict(p) for p in points]
