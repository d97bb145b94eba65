"""The demo command, end to end at a small input size."""

from __future__ import annotations

import subprocess
import sys

import pytest

from repfuse.__main__ import main


def test_demo_prints_the_before_and_after_table(capsys):
    assert main(["demo", "--size", "64", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "MobileOne-S0" in out
    lines = {line.split("  ")[0]: line.split() for line in out.splitlines() if line}
    assert lines["batch norms"][-2:] == ["226", "0"]
    assert lines["adds"][-2:] == ["226", "0"]
    assert lines["parameters"][-2:] == ["5,293,272", "2,078,504"]
    assert "verified against the train-time model" in out


def test_python_dash_m_repfuse_runs_the_demo():
    result = subprocess.run(
        [sys.executable, "-m", "repfuse", "demo", "--variant", "s1", "--size", "32", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "MobileOne-S1" in result.stdout


def test_an_unknown_variant_is_rejected():
    with pytest.raises(SystemExit):
        main(["demo", "--variant", "s9"])
