"""Keeping the caller's model untouched and the fused model independent of it.

The pass does not copy the model up front: it traces the caller's modules in place
(restoring any attribute a ``forward`` sets while being traced), builds new modules
for what it fuses, and copies only what it keeps.  The result shares no module, and
no tensor storage, with the caller's model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Undo, on exit, any change to the attributes of ``model``'s modules (tracing runs ``forward``)."""
    saved = [
        (m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in model.modules()
    ]
    try:
        yield
    finally:
        for module, attributes, parameters, buffers, children in saved:
            if module.__dict__ != attributes:
                module.__dict__.clear()
                module.__dict__.update(attributes)
            for store, contents in (
                (module._parameters, parameters),
                (module._buffers, buffers),
                (module._modules, children),
            ):
                if store != contents:
                    store.clear()
                    store.update(contents)


def shell(module: nn.Module, memo: dict) -> nn.Module:
    """A copy of ``module`` that still holds the caller's children (the caller replaces them)."""
    return copy.deepcopy(module, {**memo, **{id(child): child for child in module.children()}})


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), torch.dtype, torch.device)


def _is_immutable(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_is_immutable(item) for item in value)
    return isinstance(value, _IMMUTABLE)


def copy_module(module: nn.Module, memo: dict) -> nn.Module:
    """``copy.deepcopy(module, memo)``, faster for a stateless leaf (``nn.ReLU``, pooling, flatten).

    A module whose containers (parameters, buffers, children, hooks) are all empty and
    whose other attributes are immutable is copied with new, empty containers; any
    other is deep-copied.
    """
    if id(module) in memo:
        return memo[id(module)]
    state = vars(module)
    containers = {key: value for key, value in state.items() if isinstance(value, (dict, set, list))}
    stateless = all(not value for value in containers.values()) and all(
        _is_immutable(value) for key, value in state.items() if key not in containers
    )
    if not stateless:
        return copy.deepcopy(module, memo)
    result = type(module).__new__(type(module))
    vars(result).update({key: (type(value)() if key in containers else value) for key, value in state.items()})
    memo[id(module)] = result
    return result


def detach(fused: nn.Module, originals: list[nn.Module], memo: dict) -> None:
    """Replace every module of ``originals`` (and tensor of theirs) still held by ``fused`` with a copy.

    ``memo`` is shared by all copies of one pass, so that what was shared stays shared.
    """
    modules = {id(m) for m in originals}
    tensors = {
        id(t) for m in originals for t in (*m._parameters.values(), *m._buffers.values()) if t is not None
    }

    def visit(module: nn.Module) -> None:
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            if id(child) in modules:
                module._modules[name] = copy_module(child, memo)
            else:
                visit(child)
        for store in (module._parameters, module._buffers):
            for name, tensor in list(store.items()):
                if tensor is not None and id(tensor) in tensors:
                    store[name] = copy.deepcopy(tensor, memo)
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and id(value) in tensors:
                setattr(module, name, copy.deepcopy(value, memo))

    visit(fused)


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def copy_hooks(source: nn.Module, target: nn.Module) -> None:
    """Make ``target`` run the hooks registered on ``source`` (from now on, each keeps its own list)."""
    for name in _HOOK_DICTS:
        if hasattr(source, name):
            setattr(target, name, OrderedDict(getattr(source, name)))
    if hasattr(source, "_is_full_backward_hook"):
        target._is_full_backward_hook = source._is_full_backward_hook


def keep_plain_attributes(original: nn.Module, fused: nn.Module, memo: dict) -> None:
    """Copy the plain attributes (``num_classes``, flags, sizes) of ``original``'s modules onto ``fused``'s."""
    targets = dict(fused.named_modules())
    for name, source in original.named_modules():
        target = targets.get(name)
        if target is None:
            continue
        for key, value in vars(source).items():
            if key.startswith("_") or key == "training" or hasattr(target, key):
                continue
            if isinstance(value, (nn.Module, torch.Tensor)):
                continue
            setattr(target, key, copy.deepcopy(value, memo))
