"""What a kind of experiment supplies to the loop.

The loop (``warmstart_hf/loop.py``) runs arms x phases, resume, results, checkpoints and pushes; a
task says what a phase trains and how it is judged: how the data is prepared, how the phase model
is built, drawn afresh or loaded, what the Trainer needs (collator, batched augmentation, loss
options, per-epoch evaluation), and which metrics and diagnostics the phase's record holds. The loop
never branches on a task's name. The registered tasks: ``classification`` (from scratch), ``finetune``
(from a pretrained network), ``mae_pretrain``, ``linear_probe``, ``mae_finetune``, ``causal_lm``, and its downstream
``lm_linear_probe`` and ``lm_finetune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from torch import nn

from warmstart_hf.checkpoints import save_pretrained_atomic
from warmstart_hf.config import RecipeConfig
from warmstart_hf.data.phases import PhasePlan
from warmstart_hf.report import write_run_summary


@dataclass
class TaskData:
    """The decoded data and the plan shared by all arms of one seed."""

    plan: PhasePlan
    train: Dataset  # pixel_values (uint8 CxHxW), labels; numpy-formatted (see collate_pixels)
    test: Dataset
    model_config: Any  # the configuration every model of the run is built from
    validation: Dataset | None = None
    init_model: nn.Module | None = None  # from `init_from` (a Hub phase or local dir), else None


@dataclass(frozen=True)
class CardSpec:
    """How a task's phases read on their Hub model card (``hub.render_card``), for a task whose record
    has none of the classification fields: what the model is, its headline metric (the card's
    model-index result), the per-phase columns, and how to load and continue from a branch.
    ``load`` and ``continue_from`` are formatted with ``repo_id`` and ``branch``."""

    description: str  # e.g. "causal language model (decoder pretraining)"
    pipeline_tag: str  # the Hub's pipeline tag, e.g. "text-generation"
    task_name: str  # the model-index task name, e.g. "Causal language modeling"
    headline: tuple[str, str, str]  # (record field, metric type, metric name), e.g. held-out perplexity
    columns: tuple[tuple[str, str, str], ...]  # (record field, column header, format spec) per phase
    results_note: str  # what the columns measure
    load: str  # Python that loads the branch with transformers alone
    continue_from: str  # how a new run starts from the branch


class Task:
    """Base class: subclasses set ``name`` (by :func:`register_task`) and implement the methods."""

    name: str = ""
    best_metric: str = ""  # the per-epoch metric early stopping keeps the best of
    crops: bool = False  # stored images are cropped to crop_size on the device (random_resized_crop allowed)
    needs_pretrained: bool = False  # starts from the recipe's `pretrained` network
    accepts_pretrained: bool = False  # may start from `pretrained` (tasks that need it take it too)
    card: CardSpec | None = None  # None: the Hub card of an image classifier or an MAE (model_cards/)

    def __init__(self, config: RecipeConfig):
        self.config = config

    def prepare(self) -> TaskData:
        """Load, validate and decode the data, build the plan. Writes nothing to the run directory."""
        raise NotImplementedError

    def initial_model(self, data: TaskData, seed: int) -> nn.Module:
        """theta0 of an arm: the same for every arm of a seed."""
        raise NotImplementedError

    def fresh_model(self, data: TaskData, seed: int, phase: int) -> nn.Module:
        """A new start for ``phase`` (a cold start's draw; different per phase, reproducible)."""
        raise NotImplementedError

    def load_model(self, directory: Path) -> nn.Module:
        """A phase model saved by the loop (``save_model``)."""
        raise NotImplementedError

    def train_dataset(self, data: TaskData, phase: int) -> Dataset:
        """Everything the phase trains on, in chunk order (the newest chunk last)."""
        raise NotImplementedError

    def trainer_options(self, data: TaskData, phase: int) -> dict[str, Any]:
        """Keyword arguments of PhaseTrainer for this phase (collator, augmentation, evaluation, ...)."""
        raise NotImplementedError

    def save_initial_model(self, model: nn.Module, directory: Path) -> None:
        """theta0 as the ``init`` directory (main process), loadable with the Auto classes."""
        save_pretrained_atomic(model, directory)

    def save_phase_model(self, trainer, directory: Path) -> None:
        """The phase's final model as a plain model directory; every process calls it (FSDP gathers)."""
        trainer.save_model(str(directory))

    def throughput_unit(self, data: TaskData) -> tuple[str, int]:
        """What ``scripts/benchmark.py`` counts as work, and how many of it one training example holds:
        throughput is compared in the unit the task is judged in (images here; tokens for a language
        model, whose example is a block of many)."""
        return "images", 1

    def write_summary(self, run_dir: Path) -> str:
        """The run's summary files (main process, after every arm); returns the table to print."""
        return write_run_summary(run_dir)

    def start_record(self, model: nn.Module, data: TaskData, phase: int) -> dict[str, Any]:
        """Record fields measured on the model a phase starts from (every process; cheap)."""
        return {}

    def start_diagnostics(self, model: nn.Module, data: TaskData, phase: int) -> dict[str, Any]:
        """Measured on the model a phase starts from, after the strategy (main process)."""
        return {}

    def phase_metrics(self, trainer, data: TaskData, phase: int, train: Dataset) -> dict[str, Any]:
        """The record's metrics after training (every process takes part: prediction is distributed)."""
        raise NotImplementedError

    def end_diagnostics(self, model: nn.Module, data: TaskData, phase: int, train: Dataset, **state) -> dict[str, Any]:
        """Measured on the end-of-phase model (main process); ``state`` holds init_state and previous."""
        return {}

    def companion_metrics(self, model: nn.Module, data: TaskData, phase: int, train: Dataset) -> dict[str, Any]:
        """The metrics of an extra model a strategy keeps (main process)."""
        raise NotImplementedError
