"""The fused model as a deliverable: dtypes, devices, memory formats, copies, saving and exports."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import repfuse

from .helpers import F64, EXACT, prepare
from .test_branches import RepVGGBlock
from .zoo import MobileNetV2, ResNet, UNetDecoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Against a float64 reference, the fused model must be as accurate as the original in
# its own dtype: within twice the original's error, or this floor (relative to
# max|output|), whichever is larger.  Observed on these models: float32 1e-7..5e-7,
# float16 3e-4..1.2e-3, bfloat16 3e-3..1.2e-2, for the original and the fused model alike.
FLOOR = {torch.float32: 1e-6, torch.float16: 3e-3, torch.bfloat16: 3e-2}

MODELS = {
    "resnet": (ResNet, (2, 3, 16, 16)),
    "unet": (UNetDecoder, (2, 3, 8, 8)),
    "repvgg": (lambda: RepVGGBlock(16), (2, 16, 8, 8)),
    "mobilenetv2": (MobileNetV2, (2, 3, 16, 16)),
}


def _pair(name):
    factory, shape = MODELS[name]
    model = prepare(factory())
    return model, torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_fused_models_keep_dtype_and_device_and_accuracy(name, dtype, device):
    model, x = _pair(name)
    with torch.no_grad():
        reference = model(x)
    model = model.to(device=device, dtype=dtype)
    xd = x.to(device=device, dtype=dtype)
    fused = repfuse.fuse(model, xd, verify=True)
    assert {(p.dtype, p.device.type) for p in fused.parameters()} == {(dtype, device)}
    with torch.no_grad():
        fused_error = repfuse.relative_error(fused(xd).cpu(), reference)
        original_error = repfuse.relative_error(model(xd).cpu(), reference)
    assert fused_error <= max(2 * original_error, FLOOR[dtype]), (fused_error, original_error)


def test_channels_last_inputs_and_weights():
    model, x = _pair("repvgg")
    model = model.to(memory_format=torch.channels_last)
    fused = repfuse.fuse(model)
    (conv,) = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert repfuse.relative_error(fused(x), model(x)) < EXACT


@pytest.fixture(scope="module")
def fused_resnet():
    model, x = _pair("resnet")
    return model, repfuse.fuse(model, x), x


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = EXACT) -> None:
    assert repfuse.relative_error(a, b) < tol


def test_state_dict_keys_come_from_the_original_modules(fused_resnet):
    _, fused, _ = fused_resnet
    keys = set(fused.state_dict())
    assert {"stem.0.weight", "stem.0.bias", "layer1.0.conv1.weight", "layer1.0.conv1.bias"} <= keys
    assert {"layer2.0.downsample.0.weight", "fc.weight"} <= keys
    assert not any("bn" in key or "running" in key for key in keys)


def test_plain_attributes_are_kept(fused_resnet):
    _, fused, _ = fused_resnet
    assert fused.num_classes == 10


def test_deepcopy_and_pickle(fused_resnet):
    model, fused, x = fused_resnet
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        with torch.no_grad():
            _close(clone(x), model(x))


def test_torch_save_and_load(fused_resnet):
    model, fused, x = fused_resnet
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    # A whole module is a pickle of code: it loads with weights_only=False only.
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        _close(loaded(x), model(x))
    # The state dict loads with weights_only=True into another fuse of the same model.
    buffer = io.BytesIO()
    torch.save(fused.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = repfuse.fuse(prepare(ResNet()).to(F64))
    other.load_state_dict(state)
    with torch.no_grad():
        _close(other(x), model(x))


def test_torchscript_script_and_trace(fused_resnet):
    model, fused, x = fused_resnet
    scripted = torch.jit.script(fused)
    traced = torch.jit.trace(fused, x)
    with torch.no_grad():
        _close(scripted(x), model(x))
        _close(traced(x), model(x))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    with torch.no_grad():
        _close(torch.jit.load(buffer)(x), model(x))


def test_torch_export(fused_resnet):
    model, fused, x = fused_resnet
    exported = torch.export.export(fused, (x,))
    with torch.no_grad():
        _close(exported.module()(x), model(x))


def test_onnx_export_runs_in_onnxruntime():
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the optional 'onnx' extra")
    ort = pytest.importorskip("onnxruntime", reason="checking the ONNX file needs the optional 'onnx' extra")
    model, x = _pair("unet")
    model, x = model.float(), x.float()
    fused = repfuse.fuse(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(fused, (x,), dynamo=True)
    proto = program.model_proto
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 0
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        _close(torch.from_numpy(output), model(x), tol=1e-5)
