"""Transfer functions, one per kind of op, kept in :data:`REGISTRY`."""

from . import add, batch_norm, conv, identity  # noqa: F401  (importing registers the rules)
from .registry import REGISTRY, Opaque, Registry, Rule, RuleContext, bind, rule

__all__ = ["REGISTRY", "Opaque", "Registry", "Rule", "RuleContext", "bind", "rule"]
