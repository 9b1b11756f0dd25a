"""Conventions shared by every figure: one colour per strategy (the same in Figs. 1, 2, 4 and 5), phases
named 0-based as in run directories (``phase-00``), Hub branches and the ``phase`` field of
results.jsonl, legends outside the data, and per-strategy means with whiskers, not shaded bands
(overlapping translucent bands mix into one colour)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Red is left free; gray is for strategies not listed here.
STRATEGY_COLORS = {
    "cold": "tab:blue",
    "warm": "tab:orange",
    "shrink_perturb": "tab:green",
    "dash": "tab:purple",
    "l2_init": "tab:brown",
    "reset_head": "tab:pink",
    "reset_last_k": "tab:olive",
    "hare_tortoise": "tab:cyan",
    "cbp": "tab:red",
    "redo": "black",
    "aid": "gold",
}
PHASE_AXIS_LABEL = "phase (0 = first, as in phase-00)"


def strategy_color(strategy: str) -> str:
    return STRATEGY_COLORS.get(strategy, "tab:gray")


def phase_label(phase: int, num_phases: int) -> str:
    """``phase 1 (2/5)``: the 0-based name users find in directories and branches, then the count."""
    return f"phase {phase} ({phase + 1}/{num_phases})"


def pyplot():
    """pyplot on the Agg backend (reports are written on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def set_phase_axis(ax, phases: Sequence[int]) -> None:
    """One tick per phase, labelled with its 0-based index."""
    ax.set_xticks(list(phases), [str(p) for p in phases])
    ax.set_xlabel(PHASE_AXIS_LABEL)


def phase_means(
    ax,
    by_strategy: dict[str, list[list[dict[str, Any]]]],
    value: Callable[[dict[str, Any]], float],
    bounds: tuple[float | None, float | None] = (None, None),
) -> list[int]:
    """Per strategy the seed mean of ``value`` after each phase, at the records' own ``phase``, with a
    95% t-interval whisker (clipped to ``bounds``: an accuracy above 100% is not a result); strategies
    are shifted sideways a little (with whiskers) so whiskers do not hide each other. Returns the phases drawn."""
    from warmstart_hf.report.statistics import t_interval  # scipy: only when a figure is drawn, not at import

    strategies = sorted(by_strategy)
    shift = 0.06 if any(len(arms) > 1 for arms in by_strategy.values()) else 0.0  # only whiskers need room
    phases: set[int] = set()
    for index, strategy in enumerate(strategies):
        arms = by_strategy[strategy]
        length = min(len(records) for records in arms)
        if not length:
            continue
        values = np.array([[value(r) for r in records[:length]] for records in arms], float)
        drawn = [r["phase"] for r in arms[0][:length]]
        phases.update(drawn)
        xs = np.array(drawn, float) + shift * (index - (len(strategies) - 1) / 2)
        intervals = [t_interval(list(values[:, j])) for j in range(length)]
        means = np.array([m for m, _, _ in intervals])
        err = None
        if len(arms) > 1:
            low = np.clip([lo for _, lo, _ in intervals], *_finite(bounds))
            high = np.clip([hi for _, _, hi in intervals], *_finite(bounds))
            err = np.vstack([np.maximum(means - low, 0), np.maximum(high - means, 0)])
        label, color = f"{strategy} (n={len(arms)})", strategy_color(strategy)
        drawn_bar = ax.errorbar(xs, means, yerr=err, marker="o", ms=4, capsize=3, lw=1.4, color=color, label=label)
        drawn_bar.lines[0].set_clip_on(False)  # a point on an axis limit (0 dormant units) stays whole
    return sorted(phases)


def _finite(bounds: tuple[float | None, float | None]) -> tuple[float, float]:
    low, high = bounds
    return (-np.inf if low is None else low, np.inf if high is None else high)


def outside_legend(fig, axes) -> None:
    """One legend for the figure below the axes, so it never covers data (constrained layout makes room)."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        ncol = min(len(labels), max(1, int(fig.get_figwidth() // 2.2)))  # about 2 inches per entry
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize="small")
