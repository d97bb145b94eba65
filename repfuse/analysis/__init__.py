"""The analysis: abstract values over a ``torch.fx`` graph and the regions they form."""

from .paths import Paths
from .walk import Analysis, Placement, Region, analyze

__all__ = ["Analysis", "Placement", "Region", "Paths", "analyze"]
