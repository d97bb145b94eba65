"""The benchmark code runs (on tiny inputs) and computes what it says; it asserts no timings."""

from __future__ import annotations

import math

from torch import nn

from benchmarks import latency, pass_cost
from benchmarks.run import latency_table, targets


def test_log_log_slope_of_a_power_law():
    points = [pass_cost.ScalingPoint("x", n, 3.0 * n**1.25, 1.0) for n in (500, 1000, 4000, 16000)]
    assert math.isclose(pass_cost.slope(points), 1.25, rel_tol=1e-9)
    assert math.isclose(pass_cost.slope(points, low=4000), 1.25, rel_tol=1e-9)


def test_stacks_have_about_the_node_counts_asked_for():
    for kind in ("repvgg", "mobileone"):
        model = pass_cost.stack(kind, round(400 / pass_cost.NODES_PER_BLOCK[kind]))
        nodes = len(__import__("torch").fx.symbolic_trace(model).graph.nodes)
        assert 300 < nodes < 500, (kind, nodes)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        return (self.a(x) + self.b(x)).relu()


def test_latency_rows_for_every_form_and_the_report():
    rows = latency.measure_model("tiny", Tiny(), 8, [1], {1: 2}, compile_forms=False)
    assert [r.form for r in rows] == ["train-time", "repfuse", "fx.fuse"]
    assert all(r.ms > 0 and r.error < 1e-4 for r in rows)
    assert rows[0].vs_train == 1.0
    table = latency_table(rows)
    assert table.count("| tiny |") == 3
    versus = {"model": "tiny", "fuse_ms": 2.0, "trace_ms": 1.0, "ratio": 2.0}
    memory = [{"model": "tiny", "peak_above_baseline": 10, "parameter_bytes": 10, "ratio": 1.0}]
    checks = targets(rows, {"repvgg": 1.0}, versus, memory)
    assert [met for _, _, met in checks] == [False, True, True]


def test_adjacent_ratios_cancel_a_steady_drift(monkeypatch):
    """Mirrored pairs: a machine slowing down at a steady rate does not bias the ratio."""
    from benchmarks import timing

    clock = {"now": 0.0, "calls": 0}

    def run(cost):
        def call():
            clock["calls"] += 1
            clock["now"] += cost * (1 + 0.01 * clock["calls"])  # each call a little slower than the last

        return call

    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(timing.gc, "collect", lambda: None)
    ratios = timing.adjacent_ratios(run(2.0), run(1.0), rounds=5, warmup=0)
    assert len(ratios) == 5
    assert all(math.isclose(r, 2.0, rel_tol=1e-12) for r in ratios)


def test_the_ratio_to_hand_deploy_is_the_median_of_every_process_pair():
    """The target's ratio pools the pairs of all processes; each process's median is kept beside it."""
    from repfuse.models import mobileone

    asked = []

    def deploy_ratios(batch):
        asked.append(batch)
        return [[0.90, 0.95, 1.30], [1.00, 1.01, 1.02]]  # pooled median 1.005; per process 0.95, 1.01

    rows = latency.measure_model("mobileone-s0", mobileone("s0"), 32, [2], {2: 1}, False, deploy_ratios)
    fused = next(r for r in rows if r.form == "repfuse")
    assert asked == [2]
    assert math.isclose(fused.vs_deploy, 1.005) and fused.vs_deploy_by_process == [0.95, 1.01]
    assert next(r for r in rows if r.form == "hand deploy").vs_deploy == 1.0


def test_pairs_timed_in_fresh_processes():
    from benchmarks import deploy_pairs

    measured = deploy_pairs.ratios_in_fresh_processes("s0", 32, 1, pairs=2, processes=2, threads=1)
    assert len(measured) == 2 and all(len(ratios) == 2 for ratios in measured)
    assert all(0.2 < ratio < 5 for ratios in measured for ratio in ratios)  # a time ratio of two same-size models
