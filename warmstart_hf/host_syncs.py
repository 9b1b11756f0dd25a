"""Counting where a training step waits for the GPU: CUDA's sync debug mode warns at every operation
that synchronises the host with the device; this callback counts those warnings between the first
step of an epoch and its end (so the per-epoch logging, evaluation and checkpoint, which must read
results back, are not counted). The benchmark reports the count per optimizer step; the goal is 0."""

from __future__ import annotations

import warnings

import torch
from transformers import TrainerCallback

SYNC_WARNING = "synchroniz"  # "called a synchronizing CUDA operation"


class HostSyncCounter(TrainerCallback):
    def __init__(self) -> None:
        self.syncs = 0
        self.steps = 0
        self._catching: warnings.catch_warnings | None = None
        self._log: list[warnings.WarningMessage] = []

    @property
    def active(self) -> bool:
        return torch.cuda.is_available()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.active and self._catching is None:
            self._catching = warnings.catch_warnings(record=True)
            self._log = self._catching.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        self._stop()
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._stop()
        return control

    def _stop(self) -> None:
        if self._catching is None:
            return
        torch.cuda.set_sync_debug_mode(0)
        self.syncs += sum(SYNC_WARNING in str(w.message) for w in self._log)
        self._catching.__exit__(None, None, None)
        self._catching, self._log = None, []

    def per_step(self) -> float | None:
        """Host synchronisations per optimizer step (None on a machine without CUDA)."""
        return round(self.syncs / self.steps, 3) if self.active and self.steps else None
