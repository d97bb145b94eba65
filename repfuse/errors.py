"""The errors ``repfuse`` raises, each naming what to do about it."""


class FuseError(Exception):
    """Base class of every error ``repfuse`` raises on purpose."""


class TrainingModeError(FuseError, ValueError):
    """A BatchNorm would normalise with batch statistics: the model is not in eval mode."""


class TraceError(FuseError):
    """``torch.fx`` could not trace the model."""


class VerificationError(FuseError, AssertionError):
    """The fused model's outputs differ from the original's beyond the tolerance."""
