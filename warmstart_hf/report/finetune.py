"""The target study's Fig. 3: finetuning warm vs cold per downstream set, with and without
augmentation. The metric is the test accuracy averaged over all phases; each cell is a mean over
seeds with its 95% t-interval, next to the paired warm - cold gap and its equivalence verdict (as
for Fig. 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.report.statistics import accuracy_interval, summarize_gap
from warmstart_hf.report.style import outside_legend, pyplot, strategy_color
from warmstart_hf.report.summary import average_test_accuracy


def fig3_rows(runs: list, margin: float = 1.0) -> list[dict[str, Any]]:
    """One row per finetuning run (dataset x augmentation) with finished warm and cold arms."""
    rows = []
    for run in runs:
        if run.task != "finetune":
            continue
        warm, cold = run.complete_arms("warm"), run.complete_arms("cold")
        seeds = sorted(set(warm) & set(cold))
        if not seeds:
            continue
        row: dict[str, Any] = {
            "dataset": run.axes.get("dataset", run.dataset),
            "augmentation": "on" if run.augmentation else "off",
            "seeds": len(seeds),
        }
        for name, arms in (("warm", warm), ("cold", cold)):
            mean, low, high = accuracy_interval([100 * average_test_accuracy(arms[s]) for s in seeds])
            row.update({f"{name}_mean": mean, f"{name}_ci_low": low, f"{name}_ci_high": high})
        gaps = [100 * (average_test_accuracy(warm[s]) - average_test_accuracy(cold[s])) for s in seeds]
        summary = summarize_gap(gaps, margin)
        row.update({"gap_mean": summary.mean, "gap_ci_low": summary.ci_low, "gap_ci_high": summary.ci_high})
        row["verdict"] = summary.verdict
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["augmentation"] == "off"))


def plot_fig3(rows: list[dict[str, Any]], path: Path) -> None:
    """Average test accuracy per dataset: warm and cold, with and without augmentation, 95% intervals."""
    plt = pyplot()
    datasets = sorted({r["dataset"] for r in rows})
    bars = [(s, a) for a in ("on", "off") for s in ("warm", "cold")]
    fig, ax = plt.subplots(figsize=(1.6 * len(datasets) + 3, 4.4), layout="constrained")
    width = 0.8 / len(bars)
    for index, (strategy, augmentation) in enumerate(bars):
        chosen = {r["dataset"]: r for r in rows if r["augmentation"] == augmentation}
        xs = [i + (index - (len(bars) - 1) / 2) * width for i, d in enumerate(datasets) if d in chosen]
        cells = [chosen[d] for d in datasets if d in chosen]
        if not cells:
            continue
        means = np.array([c[f"{strategy}_mean"] for c in cells])
        err = np.array([_error(c, strategy) for c in cells]).T
        hatch = None if augmentation == "on" else "//"
        color = strategy_color(strategy)
        label = f"{strategy}, augmentation {augmentation}"
        ax.bar(xs, means, width, yerr=err, capsize=2, color=color, hatch=hatch, alpha=0.85, label=label)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel("average test accuracy over phases (%)")
    ax.set_title("Finetuning warm vs cold (Fig. 3); bars: seed means, whiskers: 95% t-intervals", fontsize="medium")
    outside_legend(fig, [ax])
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _error(cell: dict[str, Any], strategy: str) -> tuple[float, float]:
    mean, low, high = cell[f"{strategy}_mean"], cell[f"{strategy}_ci_low"], cell[f"{strategy}_ci_high"]
    return (0.0, 0.0) if low is None else (mean - low, high - mean)
