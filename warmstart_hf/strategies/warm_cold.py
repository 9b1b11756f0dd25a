"""Warm start and cold start: the two arms every study compares."""

from __future__ import annotations

import torch

from warmstart_hf.strategies.base import PhaseContext, PhaseStart, Strategy
from warmstart_hf.strategies.registry import register_strategy

# warm and cold are the two arms of every task
EVERY_TASK = (
    "classification",
    "finetune",
    "mae_pretrain",
    "linear_probe",
    "mae_finetune",
    "causal_lm",
    "lm_linear_probe",
    "lm_finetune",
)


@register_strategy("warm")
class WarmStart(Strategy):
    """Keep the previous phase's weights (and BatchNorm statistics).

    Reference variants, chosen with ``optimizer_state``: ``reset`` (default) builds a new optimizer
    each phase, as DASH's ``warm_rm``, Ash & Adams 2020 and FIRE do; ``carry`` keeps the optimizer
    state (SGD momentum / Adam moments), as DASH's ``warm`` and Dohare et al. 2024 do. The learning
    rate schedule restarts every phase in all of them.
    """

    reference = "Ash & Adams 2020; DASH (Shin et al. 2024) warm / warm_rm"
    tasks = EVERY_TASK

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        return PhaseStart(model=ctx.previous_model, carry_optimizer_state=self.carries_optimizer_state())


@register_strategy("cold")
class ColdStart(Strategy):
    """Start every phase from an untrained network; the optimizer is always new.

    ``cold_init: fresh`` (default) draws new random weights each phase, as Ash & Adams 2020, DASH and
    Dohare et al. do (each phase's draw is seeded from the arm seed and the phase, so it differs per
    phase but is reproducible). ``cold_init: same`` restores theta0, parameters AND BatchNorm buffers,
    as FIRE's full reset does (Avalanche's plugin forgets the buffers, a known bug). For task finetune,
    ``fresh_model()`` reloads the pretrained weights and BatchNorm buffers with phase 0's head (the
    target study's cold start, Section 3.1) or a new head per phase (``cold_head: fresh``).
    """

    reference = "Ash & Adams 2020 (fresh draw); FIRE full reset (cold_init: same); Revisiting Warm-Start Training 3.1"
    tasks = EVERY_TASK
    warm_derived = False

    def carries_optimizer_state(self) -> bool:
        return False  # a cold start is a new training run: its optimizer is always new

    def prepare(self, ctx: PhaseContext) -> PhaseStart:
        if ctx.phase == 0:
            return PhaseStart(model=ctx.previous_model)
        if self.options.cold_init == "same":
            model = ctx.previous_model
            with torch.no_grad():
                for name, tensor in model.state_dict().items():
                    tensor.copy_(ctx.init_state[name])
            return PhaseStart(model=model)
        return PhaseStart(model=ctx.fresh_model())
