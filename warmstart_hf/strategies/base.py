"""What a strategy receives and returns. Strategies never import the trainer or the loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import nn

from warmstart_hf.config import StrategyArguments
from warmstart_hf.data.pixels import iter_pixel_batches


@dataclass
class PhaseContext:
    """Everything a strategy may use to set up the model for one phase.

    ``previous_model`` is the model after the previous phase (at phase 0: the initial model, theta0).
    ``fresh_model()`` returns a new random draw of the architecture for this phase (deterministic from
    the arm's seed and the phase; for finetuning it reloads the pretrained weights). ``init_state`` is
    theta0: the initial parameters and buffers. ``train_dataset`` holds what the phase trains on, in
    chunk order (the newest chunk last): every example seen so far, or with ``replay_fraction`` < 1 the
    replayed sample of the earlier chunks and the new chunk; ``new_indices`` are the newest chunk's source
    indices.
    """

    phase: int
    num_phases: int
    previous_model: nn.Module
    fresh_model: Callable[[], nn.Module]
    init_state: dict[str, torch.Tensor]
    train_dataset: Dataset
    new_indices: list[int]
    seed: int
    options: StrategyArguments
    previous_phase_dir: Path | None = None  # where the previous phase's files are (for strategy state)
    resume_checkpoint: str | None = None  # the Trainer checkpoint an interrupted phase resumes from
    eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # the task's evaluation view of stored images

    def generator(self) -> torch.Generator:
        """A CPU generator seeded for this arm and phase (identical on every process)."""
        return torch.Generator().manual_seed(self.seed)

    def seen_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The phase's training data (all data seen so far unless replay_fraction < 1) in fixed order, newest
        chunk last, without augmentation."""
        return iter_pixel_batches(self.train_dataset, batch_size)


@dataclass
class PhaseStart:
    """A strategy's decision for one phase.

    ``model``: the model to train. ``carry_optimizer_state``: keep the previous phase's optimizer
    state. ``stats``: what the intervention did (written to results). ``regularizer``: a term added to
    every training loss, ``regularizer(model) -> scalar``. ``callbacks``: TrainerCallbacks for the
    phase (per-step work). ``companions``: extra models evaluated and saved at the end of the phase.
    """

    model: nn.Module
    carry_optimizer_state: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None
    callbacks: list[Any] = field(default_factory=list)
    companions: dict[str, nn.Module] = field(default_factory=dict)


class Strategy:
    """Base class: subclasses set ``reference`` and ``default_optimizer_state`` and implement
    :meth:`prepare`. ``name`` is set by :func:`register_strategy`."""

    name: str = ""
    reference: str = ""
    default_optimizer_state: str = "reset"
    warm_derived: bool = True  # starts from the previous phase's model (every strategy but cold)
    tasks: tuple[str, ...] = ("classification",)  # the tasks (warmstart_hf/tasks) it can serve

    def __init__(self, options: StrategyArguments):
        self.options = options

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        raise NotImplementedError

    def carries_optimizer_state(self) -> bool:
        """Whether the optimizer state carries into the next phase (the recipe's ``optimizer_state``
        or, when unset, this strategy's reference default)."""
        return (self.options.optimizer_state or self.default_optimizer_state) == "carry"

    def optimizer_policy(self) -> str:
        """``"carry"`` or ``"reset"``: what this arm does with the optimizer state between phases."""
        return "carry" if self.carries_optimizer_state() else "reset"
