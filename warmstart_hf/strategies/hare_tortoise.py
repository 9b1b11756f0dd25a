"""Hare & Tortoise (Lee et al., 2024): a fast learner periodically reset to its slow EMA."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.registry import register_strategy

TORTOISE_FILE = "tortoise.safetensors"


class HareTortoiseCallback(TrainerCallback):
    """After every optimizer step: tortoise <- ema * tortoise + (1 - ema) * hare, over parameters AND
    floating-point buffers (integer buffers such as BatchNorm's step count are copied). At the end of
    epochs 1, 1 + ``reset_epochs``, 1 + 2 ``reset_epochs``, ... of every phase the hare is reset to the
    tortoise (the reference's 0-indexed ``epoch % reset_every == 0``). The reference's reset makes hare
    and tortoise share storage until the next EMA update (``fast.data = slow.data``); here the hare gets
    a copy, so the optimizer step after a reset does not move the tortoise. The tortoise is saved into each
    Trainer checkpoint so an interrupted phase resumes exactly."""

    def __init__(self, tortoise: nn.Module, ema: float, reset_epochs: int):
        self.tortoise = tortoise
        self.ema = ema
        self.reset_epochs = reset_epochs
        self.resets = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.tortoise.to(next(model.parameters()).device)

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        hare = model.state_dict()
        for key, slow in self.tortoise.state_dict().items():
            fast = hare[key]
            if slow.is_floating_point():
                slow.mul_(self.ema).add_(fast.to(slow.dtype), alpha=1 - self.ema)
            else:
                slow.copy_(fast)

    @torch.no_grad()
    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        # The reference resets at the end of epochs whose 0-indexed number within the phase is a multiple
        # of reset_epochs: after the 1st, 11th, 21st, ... epoch (src/trainers/base.py of Hare-Tortoise).
        if not float(state.epoch or 0).is_integer():
            return  # training stopped part-way through the epoch (a signal, max_steps): no epoch ended
        finished = round(state.epoch or 0) - 1
        if finished >= 0 and finished % self.reset_epochs == 0:
            model.load_state_dict(self.tortoise.state_dict())
            self.resets += 1

    def write_checkpoint(self, folder: Path, args) -> None:
        """Called by the trainer while it writes a checkpoint, before marking it complete."""
        if args.should_save:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.tortoise.state_dict().items()}
            save_file(tensors, str(folder / TORTOISE_FILE))


@register_strategy("hare_tortoise")
class HareTortoise(Strategy):
    """The hare (the trained model) warm-starts every phase; the tortoise is an EMA (``ht_ema``,
    0.999) of its parameters and buffers, updated every step and carried across phases; after epochs
    1, 11, 21, ... of every phase (``ht_reset_epochs`` 10) the hare is reset to the tortoise. Both are evaluated: the
    phase's results are the hare's, with the tortoise's under ``companions.tortoise``. Optimizer:
    reset unless ``optimizer_state: carry``."""

    reference = "Hare & Tortoise, Lee et al. 2024 (EMA 0.999, reset after epochs 1, 11, 21, ... of each phase)"

    def __init__(self, options):
        super().__init__(options)
        self.tortoise: nn.Module | None = None

    def _load(self, path: Path) -> None:
        self.tortoise.load_state_dict(load_file(str(path)))

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        if self.tortoise is None:
            self.tortoise = copy.deepcopy(ctx.previous_model).eval()
            if ctx.previous_phase_dir is not None and (ctx.previous_phase_dir / TORTOISE_FILE).exists():
                self._load(ctx.previous_phase_dir / TORTOISE_FILE)
        if ctx.resume_checkpoint and (Path(ctx.resume_checkpoint) / TORTOISE_FILE).exists():
            self._load(Path(ctx.resume_checkpoint) / TORTOISE_FILE)
        callback = HareTortoiseCallback(self.tortoise, self.options.ht_ema, self.options.ht_reset_epochs)
        return PhaseStart(
            model=ctx.previous_model,
            carry_optimizer_state=self.carries_optimizer_state(),
            callbacks=[callback],
            companions={"tortoise": self.tortoise},
            stats={"ht_ema": self.options.ht_ema, "ht_reset_epochs": self.options.ht_reset_epochs},
        )
