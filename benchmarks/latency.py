"""Inference latency of each form of a model, and the float32 error of the fused forms.

Forms: the train-time model; ``repfuse.fuse``; the hand-written deploy form (MobileOne
only, ``benchmarks/reference.py``); ``torch.fx.experimental.optimization.fuse`` (conv-BN
folding only); ``torch.compile`` of the train-time and the fused model where asked.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse

import repfuse
from repfuse.models import calibrate_batch_norms, mobileone

from . import deploy_pairs
from .reference import deploy_mobileone
from .timing import interleaved, median, paired_ratio, spread


@dataclass
class Row:
    """One form of one model at one batch size."""

    model: str
    batch: int
    form: str
    ms: float
    spread: float
    vs_train: float
    vs_deploy: float | None
    error: float | None
    note: str = ""
    vs_deploy_by_process: list[float] | None = None  # the median ratio to hand deploy of each fresh process

    def to_dict(self) -> dict:
        return asdict(self)


def zoo_models() -> dict[str, tuple[nn.Module, int]]:
    """A few architectures of the test zoo, with their input size."""
    from tests.zoo import MobileNetV2, ResNet, UNetDecoder

    return {"resnet (zoo)": (ResNet(), 224), "mobilenetv2 (zoo)": (MobileNetV2(), 224), "unet (zoo)": (UNetDecoder(), 128)}


def _error(form: nn.Module, x: torch.Tensor, reference: torch.Tensor) -> float:
    with torch.no_grad():
        return repfuse.relative_error(form(x).double(), reference)


def measure_model(
    name: str,
    model: nn.Module,
    size: int,
    batches: list[int],
    rounds: dict[int, int],
    compile_forms: bool,
    deploy_ratios: Callable[[int], list[list[float]]] | None = None,
) -> list[Row]:
    """Latency rows for every form of ``model`` at every batch size.

    ``deploy_ratios(batch)``, given for a MobileOne, times repfuse over the hand deploy form
    in adjacent pairs in fresh processes (one list of ratios per process); their pooled
    median is the row's ratio to hand deploy.
    """
    calibrate_batch_norms(model, (8, 3, size, size), seed=0)
    model.float().eval()
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model.double()(x1.double())
    model.float()
    forms: dict[str, nn.Module] = {"train-time": model, "repfuse": repfuse.fuse(model, x1)}
    if name.startswith("mobileone"):
        forms["hand deploy"] = deploy_mobileone(model)
    forms["fx.fuse"] = fx_fuse(model)
    notes: dict[str, str] = {}
    if compile_forms:
        for base in ("train-time", "repfuse"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    compiled = torch.compile(forms[base])
                    with torch.no_grad():
                        compiled(x1)
                forms[f"compile({base})"] = compiled
            except Exception as error:  # torch.compile needs a working C++ toolchain
                notes[f"compile({base})"] = f"torch.compile failed: {type(error).__name__}"
    errors = {form: _error(module, x1, reference) for form, module in forms.items() if form != "train-time"}
    errors["train-time"] = _error(model, x1, reference)
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
        times = interleaved([(form, (lambda m=module: m(x))) for form, module in forms.items()], rounds[batch])
        by_process = deploy_ratios(batch) if deploy_ratios and "hand deploy" in forms else None
        for form, values in times.items():
            vs_deploy, detail = None, None
            if form == "repfuse" and by_process:
                vs_deploy = median([ratio for ratios in by_process for ratio in ratios])
                detail = [median(ratios) for ratios in by_process]
            elif "hand deploy" in times:
                vs_deploy = paired_ratio(times, form, "hand deploy")
            rows.append(
                Row(
                    name,
                    batch,
                    form,
                    median(values) * 1e3,
                    spread(values),
                    paired_ratio(times, form, "train-time"),
                    vs_deploy,
                    errors.get(form),
                    vs_deploy_by_process=detail,
                )
            )
        for form, note in notes.items():
            rows.append(Row(name, batch, form, float("nan"), float("nan"), float("nan"), None, None, note))
    return rows


def run(
    variants: list[str],
    zoo: bool,
    batches: list[int],
    rounds: dict[int, int],
    compile_for: set[str],
    pairs: dict[int, int],
    processes: int,
) -> list[Row]:
    """Rows for MobileOne ``variants`` (and the zoo); ``processes`` × ``pairs[batch]`` pairs to hand deploy."""
    rows: list[Row] = []
    threads = torch.get_num_threads()
    for v in variants:

        def deploy_ratios(batch: int, v: str = v) -> list[list[float]]:
            return deploy_pairs.ratios_in_fresh_processes(v, 224, batch, pairs[batch], processes, threads)

        rows += measure_model(f"mobileone-{v}", mobileone(v), 224, batches, rounds, f"mobileone-{v}" in compile_for, deploy_ratios)
    if zoo:
        for name, (model, size) in zoo_models().items():
            rows += measure_model(name, model, size, batches, rounds, name in compile_for)
    return rows
