"""Hare & Tortoise (Lee et al., 2024): a fast learner periodically reset to its slow EMA."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from warmstart_hf.strategies import register_strategy
from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy

TORTOISE_FILE = "tortoise.safetensors"


class HareTortoiseCallback(TrainerCallback):
    """After every optimizer step: tortoise <- ema * tortoise + (1 - ema) * hare, over parameters AND
    floating-point buffers (integer buffers such as BatchNorm's step count are copied). At the end of
    every ``reset_epochs``-th epoch the hare is reset to the tortoise. The tortoise is saved into each
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
        epoch = round(state.epoch or 0)
        if epoch > 0 and epoch % self.reset_epochs == 0:
            model.load_state_dict(self.tortoise.state_dict())
            self.resets += 1

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.tortoise.state_dict().items()},
                str(folder / TORTOISE_FILE),
            )


@register_strategy("hare_tortoise")
class HareTortoise(Strategy):
    """The hare (the trained model) warm-starts every phase; the tortoise is an EMA (``ht_ema``,
    0.999) of its parameters and buffers, updated every step and carried across phases; every
    ``ht_reset_epochs`` (10) epochs the hare is reset to the tortoise. Both are evaluated: the
    phase's results are the hare's, with the tortoise's under ``companions.tortoise``. Optimizer:
    reset unless ``optimizer_state: carry``."""

    reference = "Hare & Tortoise, Lee et al. 2024 (EMA 0.999, reset every 10 epochs)"

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
