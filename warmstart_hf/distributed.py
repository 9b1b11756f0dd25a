"""Keep every process's copy of a model identical: after an in-place intervention, and at the end of
a phase (DDP keeps parameters in sync, but each rank's BatchNorm running statistics follow its own
last batches)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (no-op without a process group).

    Interventions are computed identically on each rank from shared seeds; the broadcast removes
    any drift from non-deterministic kernels, so every rank starts the phase from the same weights.
    After training it makes every rank hold (and evaluate) the model the main process saves.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)
