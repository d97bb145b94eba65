"""repfuse ÷ hand deploy for one MobileOne, timed in adjacent mirrored pairs in fresh processes.

On a shared machine the same two models can differ by several percent from one process
to the next (where their weights and buffers land), more than the target's margin; so the
target's comparison is timed in several fresh processes and all their pairs pooled.

``python -m benchmarks.deploy_pairs VARIANT SIZE BATCH PAIRS THREADS`` times ``PAIRS``
pairs in this process and prints their ratios as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import repfuse
from repfuse.models import calibrate_batch_norms, mobileone

from .reference import deploy_mobileone
from .timing import adjacent_ratios

ROOT = Path(__file__).resolve().parent.parent


def ratios_here(variant: str, size: int, batch: int, pairs: int) -> list[float]:
    """``pairs`` ratios of the fused MobileOne's time over the hand deploy form's, in this process."""
    torch.manual_seed(0)
    model = calibrate_batch_norms(mobileone(variant), (8, 3, size, size), seed=0).float().eval()
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    fused, deploy = repfuse.fuse(model, example), deploy_mobileone(model)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    return adjacent_ratios(lambda: fused(x), lambda: deploy(x), pairs, warmup=2)


def ratios_in_fresh_processes(
    variant: str, size: int, batch: int, pairs: int, processes: int, threads: int
) -> list[list[float]]:
    """The ratios of ``processes`` fresh processes, ``pairs`` each, one list per process.

    Each process inherits this one's environment (so the malloc settings of the run).
    """
    measured = []
    for _ in range(processes):
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.deploy_pairs", variant, str(size), str(batch), str(pairs), str(threads)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        measured.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return measured


def main(argv: list[str]) -> None:
    variant, size, batch, pairs, threads = argv[0], *map(int, argv[1:5])
    torch.set_num_threads(threads)
    print(json.dumps(ratios_here(variant, size, batch, pairs)))


if __name__ == "__main__":
    main(sys.argv[1:])
