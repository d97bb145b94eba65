"""Side-by-side timing: every form of a model measured in the same rounds, medians compared."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Sequence

import torch


def interleaved(
    forms: Sequence[tuple[str, Callable[[], object]]], rounds: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call of each form, measured round by round (the order rotates each round).

    Measuring the forms in the same rounds, rather than one after the other, keeps a
    noisy machine from favouring whichever ran during a quiet spell.
    """
    with torch.no_grad():
        for _, run in forms:
            for _ in range(warmup):
                run()
        times: dict[str, list[float]] = {name: [] for name, _ in forms}
        for index in range(rounds):
            shift = index % len(forms)
            for name, run in list(forms[shift:]) + list(forms[:shift]):
                gc.collect()
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> float:
    """Interquartile range over the median: how noisy a measurement was."""
    if len(values) < 4:
        return (max(values) - min(values)) / statistics.median(values)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / statistics.median(values)


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of ``numerator``'s time over ``denominator``'s in the same round.

    Forms measured in the same round saw the same machine; the ratio of each round
    cancels most of the drift that spreads the times themselves.
    """
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def adjacent_ratios(first: Callable[[], object], second: Callable[[], object], rounds: int, warmup: int = 1) -> list[float]:
    """``first``'s time over ``second``'s, once per round, each round timed first-second-second-first.

    Where two forms are compared against a threshold, timing them next to each other,
    in mirrored order, cancels the drift between them that rounds over many forms leave.
    """
    with torch.no_grad():
        for _ in range(warmup):
            first()
            second()
        ratios = []
        for _ in range(rounds):
            taken = []
            for run in (first, second, second, first):
                gc.collect()
                start = time.perf_counter()
                run()
                taken.append(time.perf_counter() - start)
            ratios.append((taken[0] + taken[3]) / (taken[1] + taken[2]))
    return ratios
