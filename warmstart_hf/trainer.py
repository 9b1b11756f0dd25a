"""The Trainer subclass that runs one phase.

It adds to ``transformers.Trainer`` only what the references need: batched augmentation on the
device inside the training step, a multi-step learning-rate schedule (x gamma at given epochs, as
in the target study), weight decay on every parameter (the CIFAR references' rule), an optional
optimizer state carried over from the previous phase, and a strategy's regularizer added to the
loss. Everything else (devices, DDP/FSDP, mixed precision, checkpoints, resume, logging) is the
Trainer's own.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

from warmstart_hf.data.augment import BatchTransform
from warmstart_hf.optimizer_state import apply_optimizer_state


class PhaseTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        augment: BatchTransform | None = None,
        lr_milestones: list[float] | None = None,
        lr_gamma: float = 0.1,
        weight_decay_scope: str = "all",
        initial_optimizer_state: dict[str, Any] | None = None,
        regularizer: Callable[[torch.nn.Module], torch.Tensor] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.augment = augment
        self.lr_milestones = list(lr_milestones or [])
        self.lr_gamma = lr_gamma
        self.weight_decay_scope = weight_decay_scope
        self.initial_optimizer_state = initial_optimizer_state
        self.regularizer = regularizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self.augment is not None:
            inputs = {**inputs, "pixel_values": self.augment(inputs["pixel_values"])}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and self.regularizer is not None:
            # On the unwrapped model: the same parameters DDP reduces, identical on every rank.
            loss = loss + self.regularizer(self.model)
        return (loss, outputs) if return_outputs else loss

    def get_decay_parameter_names(self, model) -> list[str]:
        if self.weight_decay_scope == "all":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.initial_optimizer_state is not None:
            # A resumed phase then loads its own checkpoint's optimizer on top of this.
            apply_optimizer_state(optimizer, self.initial_optimizer_state)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.lr_milestones:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            epochs = self.args.num_train_epochs if self.args.max_steps <= 0 else None
            steps_per_epoch = num_training_steps / epochs if epochs else len(self.get_train_dataloader())
            milestones = [round(m * steps_per_epoch) for m in self.lr_milestones]
            warmup = self.args.get_warmup_steps(num_training_steps)
            gamma = self.lr_gamma

            def factor(step: int) -> float:
                ramp = step / max(1, warmup) if step < warmup else 1.0
                return ramp * gamma ** bisect.bisect_right(milestones, step)

            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler


class PhaseProgress(TrainerCallback):
    """One progress bar per arm over phases x epochs (main process only)."""

    def __init__(self, bar: tqdm | None, label: str):
        self.bar = bar
        self.label = label

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix_str(f"{self.label} loss {logs['loss']:.3f}")
        return control


def unwrap_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The state dict of the underlying torch optimizer (Accelerate wraps it)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner.state_dict()
