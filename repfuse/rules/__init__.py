"""Transfer functions, one per kind of op, kept in :data:`REGISTRY`."""

from . import arithmetic, batch_norm, concat, conv, identity, pad, pool  # noqa: F401  (importing registers the rules)
from .registry import REGISTRY, Opaque, Registry, Rule, RuleContext, bind, rule

__all__ = ["REGISTRY", "Opaque", "Registry", "Rule", "RuleContext", "bind", "rule"]
