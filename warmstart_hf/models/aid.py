"""AID, activation by interval-wise dropout (Park et al., ICML 2025): the ReLU replacement, and the swap.

The reference's ``AID`` module (the formulation of the paper's Eq. for two intervals, split at 0):
in training every element of the pre-activation ``x`` is kept (passed unchanged) or zeroed by its own
Bernoulli draw, kept with probability ``p`` where ``x >= 0`` and ``1 - p`` where ``x < 0``; nothing is
rescaled. In evaluation the expected value is used: ``p * x`` where ``x >= 0``, ``(1 - p) * x`` where
``x < 0``. ``p = 1`` is ReLU. The reference's default is ``p = 0.9``.

Masks come from a ``MaskGenerator`` shared by the network's AID layers (the aid strategy seeds one per
phase and saves its state in every checkpoint), not from torch's global generator: the global stream
(data augmentation) then stays the one a warm arm draws, so ``p = 1`` reproduces warm exactly. Without
one (a model loaded for use elsewhere) AID draws from the global generator, as ``nn.Dropout`` does. The
module has no parameters or buffers: a state dict is the same with ReLU or AID, and a saved model
rebuilds its AID layers from ``TimmClassifierConfig.aid_p``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class MaskGenerator:
    """A seeded ``torch.Generator`` for AID's masks, made on the device of the first tensor it serves (the
    training device, whichever places the model); ``state()`` / ``load()`` carry it through checkpoints."""

    def __init__(self, seed: int):
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending: torch.Tensor | None = None  # a loaded state, applied when the generator is made

    def on(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending is not None:
                self._generator.set_state(self._pending)
                self._pending = None
        return self._generator

    def state(self) -> torch.Tensor | None:
        """The generator's state, or a loaded one not yet used; None before any draw."""
        return self._generator.get_state() if self._generator is not None else self._pending

    def load(self, state: torch.Tensor) -> None:
        self._generator, self._pending = None, state.clone()

    def __deepcopy__(self, memo) -> MaskGenerator:
        """An independent copy in the same state (a diagnostics probe copies the model)."""
        twin = MaskGenerator(self.seed)
        state = self.state()
        if state is not None:
            twin.load(copy.deepcopy(state))
        return twin


class AID(nn.Module):
    """``nn.ReLU``'s drop-in replacement; ``p``: keep probability of non-negative pre-activations."""

    def __init__(self, p: float = 0.9):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AID keep probability p must be in [0, 1], got {p}")
        self.p = float(p)
        self.masks: MaskGenerator | None = None  # set by the aid strategy; None: torch's global generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            # One independent draw per element from float32 probabilities (p, not p rounded to bf16): the
            # reference's two masks, Bernoulli(p) on x >= 0 and Bernoulli(1 - p) on x < 0, in one draw.
            generator = self.masks.on(x.device) if self.masks is not None else None
            keep = torch.bernoulli(torch.where(x >= 0, self.p, 1.0 - self.p), generator=generator)
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
