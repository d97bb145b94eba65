"""Realistic BatchNorm statistics for models with random weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def calibrate_batch_norms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batches: int = 2,
    seed: int = 0,
) -> nn.Module:
    """Give every BatchNorm random affine parameters and the running statistics of real activations.

    The affine parameters are drawn from ``gamma ~ U(0.5, 1.5)``, ``beta ~ U(-0.5, 0.5)``;
    the running mean and variance are the exact averages over ``batches`` forward passes
    on standard-normal inputs of ``input_shape``, so that every layer sees activations of
    the scale a trained network would.  Returns ``model`` in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for bn in norms:
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
            bn.bias.copy_(torch.rand(bn.num_features, generator=generator) - 0.5)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    parameter = next(model.parameters())
    model.train()
    for _ in range(batches):
        x = torch.randn(input_shape, generator=generator).to(parameter)
        model(x)
    for bn in norms:
        bn.momentum = 0.1
    return model.eval()
