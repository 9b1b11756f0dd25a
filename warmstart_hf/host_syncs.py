"""Counting where a training step waits for the GPU: CUDA's sync debug mode warns at every operation
that synchronises the host with the device; this callback counts those warnings from the first step
of an epoch to the end of its last step (so the end-of-epoch work, which must read results back:
running accuracy, logging, evaluation, checkpoint, is not counted). The benchmark reports the count
per optimizer step; the goal is 0."""

from __future__ import annotations

import warnings

import torch
from transformers import TrainerCallback

from warmstart_hf.graceful_stop import stopped_at_epoch_end

SYNC_WARNING = "synchroniz"  # "called a synchronizing CUDA operation"


class HostSyncCounter(TrainerCallback):
    def __init__(self) -> None:
        self.syncs = 0
        self.steps = 0
        self._catching: warnings.catch_warnings | None = None
        self._log: list[warnings.WarningMessage] = []
        self.active = False  # set by the first step: whether training runs on a CUDA device

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = args.device.type == "cuda"
        if self.active and self._catching is None:
            self._catching = warnings.catch_warnings(record=True)
            self._log = self._catching.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        if stopped_at_epoch_end(state):  # the epoch's last step: its end-of-epoch work follows
            self.close()
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.close()
        return control

    def close(self) -> None:
        """Stop counting (also after a failed run: the debug mode must not outlive it)."""
        if self._catching is None:
            return
        torch.cuda.set_sync_debug_mode(0)
        self.syncs += sum(SYNC_WARNING in str(w.message) for w in self._log)
        self._catching.__exit__(None, None, None)
        self._catching, self._log = None, []

    def per_step(self) -> float | None:
        """Host synchronisations per optimizer step (None on a machine without CUDA)."""
        return round(self.syncs / self.steps, 3) if self.active and self.steps else None
