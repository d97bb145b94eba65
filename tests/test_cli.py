"""``python -m repfuse fuse``: end to end on a saved model, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import repfuse
from repfuse.__main__ import main

from .helpers import prepare
from .zoo import ResNet, Untraceable


@pytest.fixture
def saved(tmp_path):
    model = prepare(ResNet()).float()
    path = tmp_path / "resnet.pt"
    torch.save(model, path)
    return model, path


def test_fuse_a_saved_model_end_to_end(saved, tmp_path):
    model, path = saved
    out = tmp_path / "fused.pt"
    result = subprocess.run(
        [sys.executable, "-m", "repfuse", "fuse", str(path), "-o", str(out), "--input-shape", "2,3,32,32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "batch_norms" in result.stdout and "verified on a random 2x3x32x32 input" in result.stdout
    fused = torch.load(out, weights_only=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert repfuse.relative_error(fused(x), model(x)) < 1e-5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


def test_fuse_a_factory(tmp_path, capsys):
    out = tmp_path / "fused.pt"
    assert main(["fuse", "tests.zoo:small_resnet", "-o", str(out), "--input-shape", "1,3,16,16"]) == 0
    assert "merge(s)" in capsys.readouterr().out
    assert out.exists()


def _error(args, capsys) -> str:
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_a_missing_file(tmp_path, capsys):
    line = _error(["fuse", str(tmp_path / "nope.pt"), "-o", "x.pt", "--input-shape", "1,3,8,8"], capsys)
    assert "no such file" in line and "torch.save(model)" in line


def test_a_file_that_is_not_a_module(tmp_path, capsys):
    path = tmp_path / "state.pt"
    torch.save(ResNet().state_dict(), path)
    line = _error(["fuse", str(path), "-o", "x.pt", "--input-shape", "1,3,8,8"], capsys)
    assert "not a torch.nn.Module" in line and "save the model itself" in line


def test_a_factory_that_does_not_exist(capsys):
    line = _error(["fuse", "tests.zoo:Nothing", "-o", "x.pt", "--input-shape", "1,3,8,8"], capsys)
    assert "package.module:factory" in line


def test_a_wrong_input_shape(saved, capsys):
    _, path = saved
    line = _error(["fuse", str(path), "-o", "x.pt", "--input-shape", "1,4,32,32"], capsys)
    assert "does not accept an input of shape 1x4x32x32" in line and "--input-shape" in line


def test_a_model_in_training_mode(tmp_path, capsys):
    path = tmp_path / "training.pt"
    torch.save(ResNet(), path)
    line = _error(["fuse", str(path), "-o", "x.pt", "--input-shape", "1,3,16,16"], capsys)
    assert "training mode" in line and "--eval" in line
    assert main(["fuse", str(path), "-o", str(tmp_path / "ok.pt"), "--input-shape", "1,3,16,16", "--eval"]) == 0


def test_an_untraceable_model(tmp_path, capsys):
    path = tmp_path / "untraceable.pt"
    torch.save(Untraceable(), path)
    line = _error(["fuse", str(path), "-o", "x.pt", "--input-shape", "1,3,8,8"], capsys)
    assert "nothing to fuse" in line and "could not trace" in line


def test_a_malformed_shape_is_a_usage_error(saved, capsys):
    _, path = saved
    with pytest.raises(SystemExit) as exit:
        main(["fuse", str(path), "-o", "x.pt", "--input-shape", "1,a"])
    assert exit.value.code == 2
    assert "not a shape like 1,3,224,224" in capsys.readouterr().err


def test_the_library_returns_what_a_command_says_and_writes_nothing(tmp_path, capsys):
    from repfuse.cli import run

    outcome = run(["fuse", str(tmp_path / "nope.pt"), "-o", "x.pt", "--input-shape", "1,3,8,8"])
    assert outcome.code == 1 and outcome.error.startswith("error: no such file")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
