"""AID, activation by interval-wise dropout (Park et al., ICML 2025): the ReLU replacement, and the swap.

The reference's ``AID`` module (the formulation of the paper's Eq. for two intervals, split at 0):
in training every element of the pre-activation ``x`` is kept (passed unchanged) or zeroed by its own
Bernoulli draw, kept with probability ``p`` where ``x >= 0`` and ``1 - p`` where ``x < 0``; nothing is
rescaled. In evaluation the expected value is used: ``p * x`` where ``x >= 0``, ``(1 - p) * x`` where
``x < 0``. ``p = 1`` is ReLU. The reference's default is ``p = 0.9``.

It draws from torch's global RNG of ``x``'s device (as ``nn.Dropout`` does), which the Trainer seeds and
saves in every checkpoint, so runs are reproducible and a resumed phase continues the same masks. The
module has no parameters or buffers: a state dict is the same with ReLU or AID, and a saved model
rebuilds its AID layers from ``TimmClassifierConfig.aid_p``.
"""

from __future__ import annotations

import torch
from torch import nn


class AID(nn.Module):
    """``nn.ReLU``'s drop-in replacement; ``p``: keep probability of non-negative pre-activations."""

    def __init__(self, p: float = 0.9):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AID keep probability p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            # One independent draw per element from float32 probabilities (p, not p rounded to bf16): the
            # reference's two masks, Bernoulli(p) on x >= 0 and Bernoulli(1 - p) on x < 0, in one draw.
            keep = torch.bernoulli(torch.where(x >= 0, self.p, 1.0 - self.p))
            return x * keep.to(x.dtype)
        return torch.where(x >= 0, x * self.p, x * (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def replace_relus(module: nn.Module, p: float) -> int:
    """Replace every ``nn.ReLU`` under ``module`` (timm ResNet: the stem's ``act1`` and each block's
    ``act1`` / ``act2`` (/ ``act3``)) with ``AID(p)``, in place; an existing AID gets ``p``. Returns how many
    activations are AID now."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, AID(p))
                count += 1
            elif isinstance(child, AID):
                child.p = float(p)
                count += 1
    return count
