"""Inference latency of each form of a model, and the float32 error of the fused forms.

Forms: the train-time model; ``repfuse.fuse``; the hand-written deploy form (MobileOne
only, ``benchmarks/reference.py``); ``torch.fx.experimental.optimization.fuse`` (conv-BN
folding only); ``torch.compile`` of the train-time and the fused model where asked.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse

import repfuse
from repfuse.models import calibrate_batch_norms, mobileone

from .reference import deploy_mobileone
from .timing import adjacent_ratios, interleaved, median, paired_ratio, spread


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
) -> list[Row]:
    """Latency rows for every form of ``model`` at every batch size."""
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
        deploy_ratios = {}
        if "hand deploy" in forms:  # the target's comparison, timed in adjacent mirrored pairs
            fused, deploy = forms["repfuse"], forms["hand deploy"]
            deploy_ratios["repfuse"] = median(adjacent_ratios(lambda: fused(x), lambda: deploy(x), rounds[batch]))
        for form, values in times.items():
            rows.append(
                Row(
                    name,
                    batch,
                    form,
                    median(values) * 1e3,
                    spread(values),
                    paired_ratio(times, form, "train-time"),
                    deploy_ratios.get(form, paired_ratio(times, form, "hand deploy")) if "hand deploy" in times else None,
                    errors.get(form),
                )
            )
        for form, note in notes.items():
            rows.append(Row(name, batch, form, float("nan"), float("nan"), float("nan"), None, None, note))
    return rows


def run(variants: list[str], zoo: bool, batches: list[int], rounds: dict[int, int], compile_for: set[str]) -> list[Row]:
    rows: list[Row] = []
    models = [(f"mobileone-{v}", mobileone(v), 224) for v in variants]
    if zoo:
        models += [(name, model, size) for name, (model, size) in zoo_models().items()]
    for name, model, size in models:
        rows += measure_model(name, model, size, batches, rounds, name in compile_for)
    return rows
