"""repfuse: merge every exact linear stretch of a PyTorch model into one convolution.

``repfuse.fuse(model)`` traces an eval-mode model with ``torch.fx`` and rewrites each
region of convolutions, eval-mode BatchNorms, identities and sums of branches into
the single convolution it equals, leaving everything else as it was.
"""

from .algebra import ConvMap, Refused
from .analysis.policy import CostPolicy, MaximalPolicy
from .api import TOLERANCE, check_equivalence, explain, fuse, relative_error
from .errors import FuseError, TraceError, TrainingModeError, VerificationError
from .report import Counts, RefusalRecord, Report
from .rewrite import Merge

__version__ = "0.1.0"

__all__ = [
    "TOLERANCE",
    "ConvMap",
    "CostPolicy",
    "Counts",
    "FuseError",
    "MaximalPolicy",
    "Merge",
    "RefusalRecord",
    "Refused",
    "Report",
    "TraceError",
    "TrainingModeError",
    "VerificationError",
    "check_equivalence",
    "explain",
    "fuse",
    "relative_error",
]
