"""The analysis: abstract values over a ``torch.fx`` graph and the regions they form."""

from .paths import fetch_attr, holds_attribute
from .walk import Analysis, Placement, Region, analyze

__all__ = ["Analysis", "Placement", "Region", "analyze", "fetch_attr", "holds_attribute"]
