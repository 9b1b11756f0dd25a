"""The end-of-run summary: arms side by side, and the Fig.-1-style plot."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.style import outside_legend, phase_means, pyplot, set_phase_axis


def load_run_results(run_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """``{arm name: [phase records]}`` for every arm directory of a run."""
    arms = {}
    for results in sorted(Path(run_dir).glob("*/results.jsonl")):
        records = read_jsonl(results)
        if records:
            arms[results.parent.name] = records
    return arms


def final_test_accuracy(records: list[dict[str, Any]]) -> float:
    """Test accuracy after the last phase of an arm."""
    return records[-1]["test_accuracy"]


def average_test_accuracy(records: list[dict[str, Any]]) -> float:
    """Average incremental test accuracy: the mean over phases (the paper's Figs. 3 and 5)."""
    return float(np.mean([r["test_accuracy"] for r in records]))


def summary_rows(arms: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per strategy: means over seeds of final and average-incremental test accuracy, and
    the warm-minus-cold style gap to ``cold`` paired by seed (same split and init)."""
    by_strategy: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for records in arms.values():
        by_strategy[records[0]["strategy"]][records[0]["seed"]] = records
    num_phases = max(len(r) for r in arms.values()) if arms else 0

    def final(records):
        return final_test_accuracy(records) if len(records) == num_phases else None

    def average(records):
        return average_test_accuracy(records) if len(records) == num_phases else None

    rows = []
    cold = by_strategy.get("cold", {})
    for strategy, seeds in by_strategy.items():
        finals = [final(r) for r in seeds.values()]
        averages = [average(r) for r in seeds.values()]
        gaps = [
            final(r) - final(cold[s])
            for s, r in seeds.items()
            if s in cold and final(r) is not None and final(cold[s]) is not None
        ]
        avg_gaps = [
            average(r) - average(cold[s])
            for s, r in seeds.items()
            if s in cold and average(r) is not None and average(cold[s]) is not None
        ]
        complete = [f for f in finals if f is not None]
        rows.append(
            {
                "strategy": strategy,
                "optimizer_state": optimizer_policies(seeds.values()),
                "seeds": len(seeds),
                "phases_done": min(len(r) for r in seeds.values()),
                "final_test_accuracy": float(np.mean(complete)) if complete else None,
                "avg_incremental_test_accuracy": float(np.mean([a for a in averages if a is not None]))
                if complete
                else None,
                "final_train_accuracy": float(np.mean([r[-1]["train_accuracy"] for r in seeds.values()])),
                "gap_vs_cold_final": float(np.mean(gaps)) if gaps and strategy != "cold" else None,
                "gap_vs_cold_avg": float(np.mean(avg_gaps)) if avg_gaps and strategy != "cold" else None,
            }
        )
    return rows


def optimizer_policies(arms) -> str:
    """The optimizer-state policy of a strategy's arms (``-`` for results older than the field)."""
    return ",".join(sorted({records[0].get("optimizer_state", "-") for records in arms}))


def _fmt(value: Any, percent: bool = True, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        scaled = 100 * value if percent else value
        return f"{scaled:+.2f}" if signed else f"{scaled:.2f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| strategy | optimizer state | seeds | phases | final test acc (%) | avg incremental test acc (%) "
        "| final train acc (%) | gap vs cold, final (pts) | gap vs cold, avg (pts) |\n" + "|---" * 9 + "|\n"
    )
    lines = [
        f"| {r['strategy']} | {r['optimizer_state']} | {r['seeds']} | {r['phases_done']} | "
        f"{_fmt(r['final_test_accuracy'])} | "
        f"{_fmt(r['avg_incremental_test_accuracy'])} | {_fmt(r['final_train_accuracy'])} | "
        f"{_fmt(r['gap_vs_cold_final'], signed=True)} | {_fmt(r['gap_vs_cold_avg'], signed=True)} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


# (axis label, value of a phase record, bounds of the axis and of the whiskers, the least top of the
# axis): accuracies are percentages, dormant fractions and ranks cannot be negative, and no dormant
# units at all is shown on a 0-1% axis rather than one of hundredths of a percent.
PANELS = [
    ("train accuracy (%)", lambda r: 100 * r["train_accuracy"], (0.0, 100.0), 0.0),
    ("test accuracy (%)", lambda r: 100 * r["test_accuracy"], (0.0, 100.0), 0.0),
]
DIAGNOSTIC_PANELS = [
    ("dormant units (%)", lambda r: 100 * r["diagnostics"]["dormant_fraction"], (0.0, 100.0), 1.0),
    ("effective rank of features", lambda r: r["diagnostics"]["effective_rank"], (0.0, None), 0.0),
]


def plot_accuracy_per_phase(arms: dict[str, list[dict[str, Any]]], path: str | Path):
    """Fig.-1 style: train and test accuracy after each phase, one line per strategy (seed mean, 95%
    t-interval whiskers with several seeds), plus a diagnostics row (dormant units, effective rank)
    when the run computed diagnostics. Returns the figure."""
    plt = pyplot()
    with_diagnostics = all("diagnostics" in r for records in arms.values() for r in records)
    panels = PANELS + (DIAGNOSTIC_PANELS if with_diagnostics else [])
    rows = len(panels) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.8 * rows + 0.6), layout="constrained", squeeze=False)
    by_strategy: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for records in arms.values():
        by_strategy[records[0]["strategy"]].append(records)
    for ax, (label, value, bounds, minimum_top) in zip(axes.flat, panels):
        set_phase_axis(ax, phase_means(ax, by_strategy, value, bounds))
        low, high = ax.get_ylim()  # autoscaling pads an all-zero series below 0: clip to what can occur
        top = max(high, minimum_top) if bounds[1] is None else min(max(high, minimum_top), bounds[1] * 1.005)
        ax.set_ylim(max(low, bounds[0]), top)
        ax.set_ylabel(label)
        ax.set_title(f"{label} after each phase", fontsize="medium")
        ax.grid(alpha=0.3)
    outside_legend(fig, axes)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def write_rows_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` (dicts with the same keys) as a CSV file, written atomically."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_run_summary(run_dir: str | Path) -> str:
    """Write summary.md, summary.csv and fig1.png into the run directory; return the table."""
    run_dir = Path(run_dir)
    arms = load_run_results(run_dir)
    rows = summary_rows(arms)
    table = markdown_table(rows)
    atomic_write_text(run_dir / "summary.md", f"# {run_dir.name}\n\n{table}")
    write_rows_csv(run_dir / "summary.csv", rows)
    if arms:
        plot_accuracy_per_phase(arms, run_dir / "fig1.png")
    return table
