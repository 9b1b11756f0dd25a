"""Study reports over one or many run directories (a sweep): the paper's Fig. 1 and Fig. 2, paired
gap statistics with equivalence verdicts, and compute accounting, as CSV and markdown tables."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.finetune import fig3_rows, plot_fig3
from warmstart_hf.report.pretraining import fig4_section
from warmstart_hf.report.statistics import summarize_gap, t_interval
from warmstart_hf.report.style import outside_legend, phase_means, pyplot, set_phase_axis, strategy_color
from warmstart_hf.report.summary import average_test_accuracy, final_test_accuracy, optimizer_policies

METRICS = {
    "final": ("final test accuracy", final_test_accuracy),
    "average": ("average incremental test accuracy", average_test_accuracy),
}


@dataclass
class RunInfo:
    """One configuration: a run directory and its arms ``{(strategy, seed): [phase records]}``."""

    label: str
    run_dir: Path
    scenario: str
    num_phases: int
    axes: dict[str, str] = field(default_factory=dict)
    standard: bool = False
    arms: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    task: str = "classification"
    dataset: str = ""
    augmentation: list[str] = field(default_factory=list)

    def complete_arms(self, strategy: str) -> dict[int, list[dict[str, Any]]]:
        return {s: r for (name, s), r in self.arms.items() if name == strategy and len(r) == self.num_phases}

    @property
    def group(self) -> str:
        """The label without its scenario axis: the data and class runs of one setting share a Fig. 1."""
        parts = [p for p in self.label.split(",") if not p.startswith("scenario=")]
        return ",".join(parts) or "default"


def _run_info(run_dir: Path, label: str, axes: dict | None = None, standard: bool = False) -> RunInfo:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    incremental = config["incremental"]
    num_phases = incremental["num_phases"] or (len(incremental["phase_fractions"] or []) or 5)
    info = RunInfo(label, run_dir, incremental["scenario"], num_phases, dict(axes or {}), standard)
    info.task = incremental.get("task", "classification")
    info.dataset = config["data"]["dataset"]
    info.augmentation = list(incremental.get("augmentation") or [])
    for results in sorted(run_dir.glob("*/results.jsonl")):
        records = read_jsonl(results)
        if records:
            info.arms[(records[0]["strategy"], records[0]["seed"])] = records
    return info


def discover_runs(paths: list[str | Path]) -> list[RunInfo]:
    """Run directories under ``paths`` (a sweep directory with ``sweep.json``, or run directories)."""
    runs: list[RunInfo] = []
    for path in map(Path, paths):
        manifest = path / "sweep.json"
        if manifest.exists():
            for c in json.loads(manifest.read_text())["configurations"]:
                run_dir = path / c["run_dir"]
                if (run_dir / "config.yaml").exists():
                    runs.append(_run_info(run_dir, c["label"], c["axes"], c["standard"]))
        elif (path / "config.yaml").exists():
            runs.append(_run_info(path, path.name))
        else:
            for config in sorted(path.rglob("config.yaml")):
                runs.append(_run_info(config.parent, str(config.parent.relative_to(path))))
    if not runs:
        raise FileNotFoundError(f"no run directories (with config.yaml) under {[str(p) for p in paths]}")
    return runs


def paired_gaps(run: RunInfo, strategy: str, baseline: str, metric: str) -> list[float]:
    """Per-seed ``strategy - baseline`` gaps in accuracy points, for seeds where both arms finished."""
    value = METRICS[metric][1]
    mine, base = run.complete_arms(strategy), run.complete_arms(baseline)
    return [100 * (value(mine[s]) - value(base[s])) for s in sorted(set(mine) & set(base))]


def _curve_metric(records: list[dict[str, Any]]) -> str:
    point = (records[0].get("curve") or [{}])[-1]
    return "test_accuracy" if "test_accuracy" in point else "train_accuracy_running"


def steps_to_reach(warm: list[dict[str, Any]], cold: list[dict[str, Any]]) -> list[int | None]:
    """Per phase, the first logged step at which warm reaches cold's end-of-phase accuracy (test
    accuracy when curves were tracked, else the running train accuracy); None if it never does."""
    out: list[int | None] = []
    for w, c in zip(warm, cold):
        if not w.get("curve") or not c.get("curve"):
            out.append(None)
            continue
        key = _curve_metric([c])
        target = c["curve"][-1].get(key)
        hit = [p["step"] for p in w["curve"] if p.get(key) is not None and target is not None and p[key] >= target]
        out.append(hit[0] if hit else None)
    return out


def gap_rows(runs: list[RunInfo], baseline: str = "cold", margin: float = 1.0) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        strategies = sorted({s for s, _ in run.arms} - {baseline})
        for strategy in strategies:
            for metric in METRICS:
                gaps = paired_gaps(run, strategy, baseline, metric)
                if not gaps:
                    continue
                summary = summarize_gap(gaps, margin, name=strategy)
                rows.append(
                    {
                        "configuration": run.label,
                        "scenario": run.scenario,
                        "standard": run.standard,
                        "comparison": f"{strategy} - {baseline}",
                        "metric": metric,
                        **summary.as_dict(),
                    }
                )
    return rows


def strategy_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for strategy in sorted({s for s, _ in run.arms}):
            arms = run.complete_arms(strategy)
            if not arms:
                continue
            row: dict[str, Any] = {
                "configuration": run.label,
                "scenario": run.scenario,
                "strategy": strategy,
                "optimizer_state": optimizer_policies(arms.values()),
                "seeds": len(arms),
            }
            for metric, (_, value) in METRICS.items():
                mean, low, high = t_interval([100 * value(r) for r in arms.values()])
                row.update({f"{metric}_mean": mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            row["steps"] = float(np.mean([sum(p["steps"] for p in r) for r in arms.values()]))
            row["train_seconds"] = float(np.mean([sum(p["train_seconds"] for p in r) for r in arms.values()]))
            cold = run.complete_arms("cold")
            if strategy != "cold" and cold:
                reach = [steps_to_reach(arms[s], cold[s]) for s in arms if s in cold]
                flat = [x for per_seed in reach for x in per_seed[1:]]  # phases after the first
                row["steps_to_reach_cold"] = (
                    float(np.mean([x for x in flat if x is not None])) if any(x is not None for x in flat) else None
                )
                row["phases_reaching_cold"] = f"{sum(x is not None for x in flat)}/{len(flat)}"
            rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) < 1e-9:
            return "0.00"
        return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.2f}"
    return str(value)


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))  # rows may add optional columns
    writer = csv.DictWriter(buffer, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_fig1(runs: list[RunInfo], path: Path):
    """Train and test accuracy after each phase per strategy: seed means with 95% t-interval whiskers
    (clipped to 0-100%); columns are the scenarios (data, class) of one setting. Returns the figure."""
    plt = pyplot()
    runs = sorted(runs, key=lambda r: r.scenario != "data")
    fig, axes = plt.subplots(2, len(runs), figsize=(5 * len(runs), 7.5), squeeze=False, layout="constrained")
    for column, run in enumerate(runs):
        by_strategy = {s: list(run.complete_arms(s).values()) for s in sorted({s for s, _ in run.arms})}
        by_strategy = {s: arms for s, arms in by_strategy.items() if arms}
        for row, key in enumerate(("train_accuracy", "test_accuracy")):
            ax = axes[row][column]
            phases = phase_means(ax, by_strategy, lambda r, k=key: 100 * r[k], bounds=(0.0, 100.0))
            set_phase_axis(ax, phases or range(run.num_phases))
            ax.set_title(f"{run.scenario}-incremental: {key.replace('_', ' ')}", fontsize="medium")
            ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
    outside_legend(fig, axes)
    note = "seed means; whiskers: 95% t-intervals (clipped to 0-100%)"
    label = textwrap.fill(runs[0].group.replace(",", ", "), 70)  # wrapped between the axes
    fig.suptitle(f"{label}\n{note}", fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def plot_fig2(rows: list[dict[str, Any]], path: Path, comparison: str = "warm - cold", metric: str = "final"):
    """The gap of every configuration, sorted, with 95% intervals, in the compared strategy's colour;
    the standard scheme drawn as a diamond (the legend names only the markers drawn). Returns the figure."""
    plt = pyplot()
    chosen = sorted(
        (r for r in rows if r["comparison"] == comparison and r["metric"] == metric), key=lambda r: r["mean"]
    )
    if not chosen:
        return None
    color = strategy_color(comparison.split(" - ")[0])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(chosen) + 1.9), layout="constrained")
    for y, r in enumerate(chosen):
        err = None if r["ci_low"] is None else [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]]
        marker, size, label = ("D", 7, "standard scheme") if r["standard"] else ("o", 5, "other configurations")
        label = label if any(c["standard"] for c in chosen) else None  # no legend without a standard row
        ax.errorbar(r["mean"], y, xerr=err, fmt=marker, ms=size, color=color, capsize=3, label=label)
    labels = [f"{r['configuration']} ({r['scenario']})" for r in chosen]
    ax.set_yticks(range(len(chosen)), labels, fontsize="small")
    for tick, r in zip(ax.get_yticklabels(), chosen):
        tick.set_fontweight("bold" if r["standard"] else "normal")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"{comparison}, {METRICS[metric][0]} (points; 95% t-interval)")
    ax.set_title(f"Gap per configuration: {comparison}", fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    outside_legend(fig, [ax])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


FIG3_COLUMNS = [
    "dataset",
    "augmentation",
    "seeds",
    "warm_mean",
    "warm_ci_low",
    "warm_ci_high",
    "cold_mean",
    "cold_ci_low",
    "cold_ci_high",
    "gap_mean",
    "gap_ci_low",
    "gap_ci_high",
    "verdict",
]


def write_study_report(paths: list[str | Path], out_dir: str | Path | None = None, margin: float = 1.0) -> Path:
    """Write Fig. 1 (one per setting), Fig. 2 (and Fig. 3 for finetuning runs), the gap and strategy
    tables, and for pretraining runs Fig. 4 and the alignment table; return the folder."""
    runs = discover_runs(paths)
    out = Path(out_dir) if out_dir else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    pretraining = [r for r in runs if r.task == "mae_pretrain"]  # judged by probe loss, not accuracy
    accuracy = [r for r in runs if r.task != "mae_pretrain"]
    text = [
        "# Study report\n",
        f"Runs: {', '.join(str(p) for p in paths)}. Gaps are paired by seed, in accuracy points; intervals are "
        f"95% t-intervals; the verdict uses two one-sided tests at a margin of {margin} point(s).\n",
        *(_accuracy_sections(accuracy, out, margin) if accuracy else []),
        *fig4_section([(r.label, r.run_dir) for r in pretraining], out),
    ]
    atomic_write_text(out / "report.md", "\n".join(text))
    return out


def _accuracy_sections(runs: list[RunInfo], out: Path, margin: float) -> list[str]:
    """The gap and strategy tables, Figs. 1-3 (written to ``out``), as report.md sections."""
    gaps = gap_rows(runs, margin=margin)
    strategies = strategy_rows(runs)
    groups: dict[str, list[RunInfo]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    figures = []
    for index, (group, members) in enumerate(sorted(groups.items(), key=lambda g: not any(r.standard for r in g[1]))):
        name = "fig1.png" if index == 0 else f"fig1-{index:02d}.png"
        plot_fig1(members, out / name)
        figures.append((name, group))
    plot_fig2(gaps, out / "fig2.png")
    gap_columns = [
        "configuration",
        "scenario",
        "standard",
        "comparison",
        "metric",
        "n",
        "mean",
        "ci_low",
        "ci_high",
        "tost_p",
        "verdict",
    ]
    strategy_columns = [
        "configuration",
        "scenario",
        "strategy",
        "optimizer_state",
        "seeds",
        "final_mean",
        "final_ci_low",
        "final_ci_high",
        "average_mean",
        "steps",
        "train_seconds",
        "steps_to_reach_cold",
        "phases_reaching_cold",
    ]
    atomic_write_text(out / "gaps.csv", _csv(gaps))
    atomic_write_text(out / "strategies.csv", _csv(strategies))
    fig3 = fig3_rows(runs, margin)
    if fig3:
        atomic_write_text(out / "fig3.csv", _csv(fig3))
        plot_fig3(fig3, out / "fig3.png")
    fig3_section = [
        "## Fig. 3: finetuning, average test accuracy over phases\n",
        "Means over seeds (%) with 95% t-intervals; `gap`: warm - cold paired by seed (points).\n",
        _markdown(fig3, FIG3_COLUMNS),
    ]
    return [
        "## Gaps against cold\n",
        _markdown(gaps, gap_columns),
        *(fig3_section if fig3 else []),
        "## Strategies\n",
        "Accuracies in %, means over seeds; `steps` and `train_seconds` are totals over the phases; "
        "`steps_to_reach_cold`: mean first step (phases after the first) at which the arm reaches cold's "
        "end-of-phase accuracy.\n",
        _markdown(strategies, strategy_columns),
        "## Figures\n",
        *[f"- `{name}`: {group}\n" for name, group in figures],
        "- `fig2.png`: warm - cold, final test accuracy, per configuration\n",
        *(["- `fig3.png`: finetuning, warm vs cold per dataset, with and without augmentation\n"] if fig3 else []),
    ]
