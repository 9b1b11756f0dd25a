"""Did a training run's loss plateau while its learning rate was still high?

A slope over the last steps cannot tell: under a cosine or step schedule the last steps run at a
tiny learning rate, so every run looks flat there, converged or not, and the annealing then lowers
the loss of every run. The question that separates a probe that converged from one whose learning
rate is too small is asked of the steps at which the learning rate was at least half its peak (the
*high-LR phase*: the whole run at a constant LR, up to the first milestone of a step schedule, about
the first half of a cosine): did the last quarter of that phase still make a real share of the
phase's loss drop? A head still descending at a steady rate makes about a quarter of its drop there;
one that converged makes about none. Plateaued: below ``PLATEAU_SHARE``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HIGH_LR = 0.5  # the high-LR phase: learning rate >= this fraction of its peak
TAIL = 0.25  # its last quarter (of steps)
PLATEAU_SHARE = 0.1  # below this share of the phase's loss drop in its last quarter: plateaued


def loss_plateau(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """``train_loss_tail_fraction`` (the share of the high-LR phase's training-loss drop made in its
    last quarter, by a linear fit of the logged loss over that quarter's steps) and
    ``train_loss_plateaued`` (None: fewer than 4 logged points in the phase)."""
    logs = [e for e in log_history if "loss" in e and "learning_rate" in e and "step" in e]
    peak = max((e["learning_rate"] for e in logs), default=0.0)
    high = [e for e in logs if peak > 0 and e["learning_rate"] >= HIGH_LR * peak]
    if len(high) < 4:
        return {"train_loss_tail_fraction": None, "train_loss_plateaued": None}
    steps = np.asarray([e["step"] for e in high], dtype=float)
    loss = np.asarray([e["loss"] for e in high], dtype=float)
    tail = steps >= steps[-1] - TAIL * (steps[-1] - steps[0])
    tail[-2:] = True  # at least two points to fit
    slope, intercept = np.polyfit(steps[tail], loss[tail], 1)
    drop = loss[0] - (slope * steps[-1] + intercept)  # from the phase's first log to the fit's end
    tail_drop = -slope * (steps[-1] - steps[tail][0])
    fraction = float(tail_drop / drop) if drop > 0 else None
    return {
        "train_loss_tail_fraction": fraction,
        "train_loss_plateaued": fraction is not None and fraction < PLATEAU_SHARE,
    }
