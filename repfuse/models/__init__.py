"""Reference models in train-time form, built from plain ``nn`` layers."""

from .mobileone import VARIANTS, MobileOne, MobileOneBlock, SqueezeExcite, mobileone
from .statistics import calibrate_batch_norms

__all__ = ["VARIANTS", "MobileOne", "MobileOneBlock", "SqueezeExcite", "calibrate_batch_norms", "mobileone"]
