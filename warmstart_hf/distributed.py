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


_CPU_GROUP = None


def cpu_group():
    """The default group when it is gloo already, else one gloo group made once (every rank reaches the
    first call at the same step, as ``new_group`` requires): small agreements travel over it without
    waiting for the GPU's queue."""
    global _CPU_GROUP
    if dist.get_backend() == "gloo":
        return None
    if _CPU_GROUP is None:
        _CPU_GROUP = dist.new_group(backend="gloo")
    return _CPU_GROUP


def max_over_ranks(value: float) -> float:
    """The largest ``value`` of all processes (a collective under DDP: call it on every rank), so a
    decision taken from it (e.g. on wall time) is the same everywhere."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=cpu_group())
    return float(tensor)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over processes, in place (a collective under DDP: call it on every rank), so a
    decision taken from them is the same everywhere; unchanged in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values
