"""Did a training run's loss plateau? Judged on the learning-rate clock, not on steps.

Under a cosine schedule the last 10% of the *steps* barely move any model (their learning rate is
about 2% of the peak), so a slope over the last steps says "flat" for a probe that stopped far from
its optimum. The clock here is the learning-rate integral: ``tau`` runs from 0 to 1 as the run
spends its learning rate. A run has plateaued when the last 10% of that integral made less than
``PLATEAU_SHARE`` of the run's whole training-loss drop: a head still descending at a steady rate
(a too-small learning rate) makes about 10% of its drop there, a converged one about none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TAIL = 0.1  # the last 10% of the learning-rate integral
PLATEAU_SHARE = 0.05  # below this share of the whole drop in the tail: plateaued


def loss_plateau(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """``train_loss_tail_fraction`` (the share of the loss drop made in the tail, by a linear fit of
    the logged training loss against ``tau``) and ``train_loss_plateaued`` (None: too few logs)."""
    logs = [e for e in log_history if "loss" in e and "learning_rate" in e and "step" in e]
    if len(logs) < 3:
        return {"train_loss_tail_fraction": None, "train_loss_plateaued": None}
    steps = np.diff([0] + [e["step"] for e in logs])
    spent = np.cumsum(steps * np.asarray([e["learning_rate"] for e in logs], dtype=float))
    tau = spent / spent[-1] if spent[-1] > 0 else np.linspace(0, 1, len(logs))
    loss = np.asarray([e["loss"] for e in logs], dtype=float)
    tail = tau >= 1 - TAIL
    if tail.sum() < 2:
        tail[-2:] = True
    slope, intercept = np.polyfit(tau[tail], loss[tail], 1)
    end = slope + intercept  # the fit's loss at tau = 1
    drop = loss[0] - end
    tail_drop = -slope * (1 - tau[tail].min())
    fraction = float(tail_drop / drop) if drop > 0 else None
    return {
        "train_loss_tail_fraction": fraction,
        "train_loss_plateaued": fraction is not None and fraction < PLATEAU_SHARE,
    }
