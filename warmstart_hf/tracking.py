"""One experiment-tracker run per arm (``report_to: tensorboard``).

The Trainer's own integration opens one run per Trainer, that is per phase, each with its steps from 0.
Here an arm's phases share one TensorBoard run, ``<arm>/tensorboard``: its step axis is the arm's
optimizer steps across phases (a phase's steps are offset by the steps of the phases before it, as
``results.jsonl`` records them), the phase is a scalar (``phase``), and each finished phase adds its
record's numbers (``phase/<field>``, e.g. ``phase/test_accuracy``) at its last step. A resumed arm
writes into the same directory and continues the same axis; what an interrupted process logged after the
step the run resumes from is purged (TensorBoard's ``purge_step``), so every step appears once.
Other integrations (trackio, wandb, ...) still report through the Trainer, one run per phase.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import rewrite_logs

from warmstart_hf.config import ConfigError, RecipeConfig, register_recipe_check

ARM_TRACKERS = ("tensorboard",)  # report_to names the loop serves per arm instead of the Trainer per phase
TENSORBOARD_DIR = "tensorboard"


@register_recipe_check
def check_tracker(config: RecipeConfig) -> None:
    """Recipe check: a tracker the loop writes itself must be importable before anything runs."""
    if "tensorboard" in config.training.report_to and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "Recipe field `report_to` names 'tensorboard', which is not installed. Fix: pip install tensorboard "
            "(or the package's dev extra), or set `report_to: none`."
        )


def trainer_report_to(report_to: list[str]) -> list[str]:
    """The integrations the Trainer itself should report to: all but those tracked per arm here."""
    return [name for name in report_to if name not in ARM_TRACKERS]


def arm_tracker(config: RecipeConfig, arm_dir: Path, is_main: bool) -> ArmTensorBoard | None:
    """The arm's tracker when ``report_to`` names one (main process only), else None."""
    if not is_main or "tensorboard" not in config.training.report_to:
        return None
    return ArmTensorBoard(arm_dir / TENSORBOARD_DIR)


class ArmTensorBoard(TrainerCallback):
    """One SummaryWriter for every phase of an arm; added to each phase's Trainer by the loop."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.writer = None
        self.phase = 0
        self.offset = 0  # optimizer steps of the arm's earlier phases

    def start_phase(self, phase: int, step_offset: int) -> ArmTensorBoard:
        self.phase, self.offset = phase, step_offset
        return self

    def _writer(self, phase_step: int):
        """Opened on first use, after the Trainer restored a resumed phase's state (it does so after
        ``on_train_begin``): events an interrupted process logged past ``phase_step`` are purged."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir), purge_step=self.offset + phase_step + 1)
        return self.writer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._writer(state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        writer, step = self._writer(state.global_step), self.offset + state.global_step
        writer.add_scalar("phase", self.phase, step)
        for key, value in rewrite_logs(logs or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)
        writer.flush()
        return control

    def end_phase(self, record: dict[str, Any]) -> None:
        """The finished phase's record (its numbers) at the phase's last step on the arm's axis."""
        writer, step = self._writer(record["steps"]), self.offset + record["steps"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("phase", "seed"):
                writer.add_scalar(f"phase/{key}", value, step)
        writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
