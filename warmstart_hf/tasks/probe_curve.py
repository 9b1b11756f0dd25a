"""The probe-loss curve of a pretraining phase, shared by the pretraining tasks (MAE, causal LM).

A probe loss is a deterministic loss on a fixed held-out sample (the same for every arm, phase and
step). :class:`ProbeLoss` measures it every ``every`` optimizer steps into the Trainer's log history
(which survives a resume) and keeps a model-only snapshot per measurement under
``phase-XX/snapshots/``: the candidates of loss alignment (``report/alignment.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback

from warmstart_hf.checkpoints import save_pretrained_atomic

SNAPSHOTS = "snapshots"


class ProbeLoss(TrainerCallback):
    """Every ``every`` optimizer steps: ``measure(model)`` into the log history as ``probe_loss``, and a
    snapshot (main process). The last step is left out: it is the phase model, which the task measures."""

    def __init__(self, measure: Callable[[nn.Module], float], every: int):
        self.measure, self.every = measure, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps
        if state.global_step % self.every or model is None or last:
            return control
        state.log_history.append({"epoch": state.epoch, "step": state.global_step, "probe_loss": self.measure(model)})
        if args.should_save:  # complete or absent: alignment may pick any snapshot
            save_pretrained_atomic(model, Path(args.output_dir) / SNAPSHOTS / f"step-{state.global_step:07d}")
        return control


def probe_curve(trainer, phase: int, final: float) -> list[dict[str, Any]]:
    """The phase's probe curve: every snapshot's loss (paths relative to the arm), then the phase model's."""
    phase_dir = f"phase-{phase:02d}"
    last = int(trainer.state.global_step)  # a snapshot at the last step is the phase model itself
    curve = [
        {"step": e["step"], "probe_loss": e["probe_loss"], "snapshot": f"{phase_dir}/{SNAPSHOTS}/step-{e['step']:07d}"}
        for e in trainer.state.log_history
        if "probe_loss" in e and e["step"] != last
    ]
    curve.append({"step": last, "probe_loss": final, "snapshot": phase_dir})
    return curve
