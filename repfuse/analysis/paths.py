"""Objects a graph names by path: ``call_module`` and ``get_attr`` targets such as ``layer1.0.conv``."""

from __future__ import annotations

from typing import Any

from torch import nn


class Paths:
    """The objects at paths in ``owner``, each path looked up once.

    ``owner`` must not change while this is in use (the pass reads the caller's model,
    which it never changes).
    """

    def __init__(self, owner: nn.Module):
        self.owner = owner
        self._found: dict[str, Any] = {"": owner}

    def __getitem__(self, target: str) -> Any:
        """The object at ``target`` (``AttributeError`` if none)."""
        try:
            return self._found[target]
        except KeyError:
            prefix, _, name = target.rpartition(".")
            found = self._found[target] = getattr(self[prefix], name)
            return found

    def __contains__(self, target: str) -> bool:
        try:
            self[target]
        except AttributeError:
            return False
        return True
