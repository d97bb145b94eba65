"""The algebra of convolution maps: pure tensor maths, no ``torch.fx``.

Every function takes and returns :class:`ConvMap` values (or, for a sum whose
weights are computed later, a :class:`PendingSum`) and raises :class:`Refused`
(with a reason) where no exact result exists.
"""

from .affine import batch_norm_scale_shift, batch_norm_scale_shifts, channel_vector, fold_batch_norm, scale_shift
from .combine import (
    PendingSum,
    add,
    as_forward,
    compose,
    concat,
    pending_scale_shift,
    pending_sum,
    sum_maps,
    weighted_sum,
)
from .convmap import (
    FOLD_DTYPE,
    PADDING_MODES,
    ConvMap,
    Refused,
    channel_affine,
    conv,
    conv_transpose,
    identity,
    in_fold_dtype,
    linear,
    require,
)
from .cost import ZERO, Cost, cost, elementwise_cost
from .evaluate import apply, torch_padding
from .groups import expand_groups
from .uniform import avg_pool, depthwise, is_identity, lift_rank, pad, scalar_affine
from .window import Window, common_window, embed, padding_mode_of, window_of

__all__ = [
    "FOLD_DTYPE",
    "PADDING_MODES",
    "PendingSum",
    "ConvMap",
    "Cost",
    "Refused",
    "Window",
    "ZERO",
    "add",
    "apply",
    "avg_pool",
    "as_forward",
    "batch_norm_scale_shift",
    "batch_norm_scale_shifts",
    "channel_affine",
    "channel_vector",
    "common_window",
    "compose",
    "concat",
    "conv",
    "conv_transpose",
    "cost",
    "depthwise",
    "elementwise_cost",
    "embed",
    "expand_groups",
    "fold_batch_norm",
    "identity",
    "in_fold_dtype",
    "is_identity",
    "lift_rank",
    "linear",
    "pad",
    "padding_mode_of",
    "pending_scale_shift",
    "pending_sum",
    "require",
    "scalar_affine",
    "scale_shift",
    "sum_maps",
    "torch_padding",
    "weighted_sum",
    "window_of",
]
