"""Objects a graph names by path: ``call_module`` and ``get_attr`` targets such as ``layer1.0.conv``."""

from __future__ import annotations

from typing import Any

from torch import nn


def fetch_attr(owner: nn.Module, target: str) -> Any:
    """The object at ``target`` in ``owner``, e.g. ``owner.layer1.weight`` (``AttributeError`` if none)."""
    obj: Any = owner
    for name in target.split("."):
        obj = getattr(obj, name)
    return obj


def holds_attribute(owner: nn.Module, target: str) -> bool:
    """Whether ``owner`` has an object at ``target``."""
    try:
        fetch_attr(owner, target)
    except AttributeError:
        return False
    return True
