"""What a strategy receives and returns. Strategies never import the trainer or the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch import nn

from warmstart_hf.config import StrategyArguments


@dataclass
class PhaseContext:
    """Everything a strategy may use to set up the model for one phase.

    ``previous_model`` is the model after the previous phase (at phase 0: the initial model, theta0).
    ``fresh_model()`` returns a new random draw of the architecture for this phase (deterministic from
    the arm's seed and the phase; for finetuning it reloads the pretrained weights). ``init_state`` is
    theta0: the initial parameters and buffers.
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


@dataclass
class PhaseStart:
    """A strategy's decision: the model to train, whether the optimizer state carries over, and stats."""

    model: nn.Module
    carry_optimizer_state: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class Strategy:
    """Base class: subclasses set ``name`` and ``reference`` and implement :meth:`prepare`."""

    name: str = ""
    reference: str = ""

    def __init__(self, options: StrategyArguments):
        self.options = options

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        raise NotImplementedError

    def carries_optimizer_state(self) -> bool:
        """Whether the loop must keep each phase's final optimizer state for the next phase."""
        return False
