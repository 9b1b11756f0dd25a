"""Study reports over one or many run directories (a sweep): the paper's Fig. 1 and Fig. 2, paired
gap statistics with equivalence verdicts, and compute accounting, as CSV and markdown tables."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.finetune import fig3_rows, plot_fig3
from warmstart_hf.report.language import language_sections
from warmstart_hf.report.pages import Figure, Section, dict_table, markdown_sections, render_html, strategy_table
from warmstart_hf.report.pretraining import fig4_section
from warmstart_hf.report.statistics import accuracy_interval, summarize_gap
from warmstart_hf.report.style import outside_legend, phase_means, pyplot, set_phase_axis, strategy_color
from warmstart_hf.report.summary import average_test_accuracy, final_test_accuracy, optimizer_policies

LOSS_TASKS = ("mae_pretrain", "causal_lm")  # pretraining: probe loss and alignment (Fig. 4), no accuracy
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


def standard_scheme(run_dir: Path) -> bool:
    """Whether ``run_dir`` is the configuration its sweep (``../sweep.json``) marks as the standard scheme."""
    manifest = Path(run_dir).parent / "sweep.json"
    if not manifest.is_file():
        return False
    configurations = json.loads(manifest.read_text())["configurations"]
    return any(c["standard"] for c in configurations if c["run_dir"] == Path(run_dir).name)


def find_run_dirs(path: str | Path) -> list[tuple[Path, str, dict[str, str], bool]]:
    """``(run directory, label, axes, standard)`` under ``path``: the configurations of a sweep
    directory (``sweep.json``), the run directory itself, or every run directory below it."""
    path = Path(path)
    manifest = path / "sweep.json"
    if manifest.exists():
        configurations = json.loads(manifest.read_text())["configurations"]
        found = [(path / c["run_dir"], c["label"], c["axes"], c["standard"]) for c in configurations]
        return [entry for entry in found if (entry[0] / "config.yaml").exists()]
    if (path / "config.yaml").exists():
        return [(path, path.name, {}, standard_scheme(path))]
    return [(c.parent, str(c.parent.relative_to(path)), {}, False) for c in sorted(path.rglob("config.yaml"))]


def discover_runs(paths: list[str | Path]) -> list[RunInfo]:
    """Run directories under ``paths`` (a sweep directory with ``sweep.json``, or run directories)."""
    runs = [_run_info(*entry) for path in paths for entry in find_run_dirs(path)]
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


WARM_GAP_COLUMNS = ["configuration", "comparison", "metric", "n", "mean", "ci_low", "ci_high", "verdict"]


def warm_gap_rows(runs: list[RunInfo], margin: float = 1.0) -> list[dict[str, Any]]:
    """Every strategy but cold against warm (the interventions built to keep plasticity, measured
    against doing nothing): :func:`gap_rows` with warm as the baseline."""
    return [row for row in gap_rows(runs, baseline="warm", margin=margin) if row["comparison"] != "cold - warm"]


def strategy_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """Per configuration x strategy with finished arms: seed means of the accuracies (%) with 95%
    t-intervals clipped to [0, 100], compute totals, and how soon the arm reaches cold."""
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
                mean, low, high = accuracy_interval([100 * value(r) for r in arms.values()])
                row.update({f"{metric}_mean": mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            row["steps"] = _mean_total(arms.values(), "steps")
            row["train_seconds"] = _mean_total(arms.values(), "train_seconds")
            row.update(_reach_cold(run, strategy, arms))
            rows.append(row)
    return rows


def _mean_total(arms: Any, key: str) -> float | None:
    """The seed mean of an arm's total ``key`` over phases; None where a record lacks it (Hub rows)."""
    totals = [sum(p[key] for p in records) for records in arms if all(key in p for p in records)]
    return float(np.mean(totals)) if totals and len(totals) == len(arms) else None


def _reach_cold(run: RunInfo, strategy: str, arms: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """``steps_to_reach_cold`` and ``phases_reaching_cold`` (none for cold, nor without curves)."""
    cold = run.complete_arms("cold")
    if strategy == "cold" or not cold:
        return {}
    if not any(p.get("curve") for records in arms.values() for p in records):
        return {"steps_to_reach_cold": None, "phases_reaching_cold": None}
    reach = [steps_to_reach(arms[s], cold[s]) for s in arms if s in cold]
    flat = [x for per_seed in reach for x in per_seed[1:]]  # phases after the first
    hits = [x for x in flat if x is not None]
    return {
        "steps_to_reach_cold": float(np.mean(hits)) if hits else None,
        "phases_reaching_cold": f"{len(hits)}/{len(flat)}",
    }


def strategy_lines(runs: list[RunInfo], margin: float = 1.0) -> dict[str, list[dict[str, Any]]]:
    """Per configuration label, :func:`strategy_rows` joined with each strategy's gaps to cold
    (``gap_final`` and ``gap_average``: :func:`gap_rows` rows): the lines of the pages' tables."""
    gaps = {
        (g["configuration"], g["comparison"].split(" - ")[0], g["metric"]): g for g in gap_rows(runs, margin=margin)
    }
    lines: dict[str, list[dict[str, Any]]] = {run.label: [] for run in runs}
    for row in strategy_rows(runs):
        key = (row["configuration"], row["strategy"])
        lines[row["configuration"]].append(
            {**row, "gap_final": gaps.get((*key, "final")), "gap_average": gaps.get((*key, "average"))}
        )
    return lines


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


REPORT_COLUMNS = [
    "strategy",
    "optimizer_state",
    "seeds",
    "final_test_accuracy",
    "avg_incremental_test_accuracy",
    "gap_vs_cold_final",
    "verdict_final",
    "gap_vs_cold_avg",
    "verdict_avg",
    "steps",
    "train_seconds",
    "steps_to_reach_cold",
    "phases_reaching_cold",
]


def write_study_report(paths: list[str | Path], out_dir: str | Path | None = None, margin: float = 1.0) -> Path:
    """Write Fig. 1 (one per setting), Fig. 2 (and Fig. 3 for finetuning runs), the gap and strategy
    tables, and for pretraining runs Fig. 4 and the alignment table; ``report.md`` embeds the figures
    and ``report.html`` (self-contained) shows the same sections. Return the folder."""
    runs = discover_runs(paths)
    out = Path(out_dir) if out_dir else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    pretraining = [r for r in runs if r.task in LOSS_TASKS]  # judged by probe loss, not accuracy
    language = [r for r in runs if r.task == "causal_lm"]
    accuracy = [r for r in runs if r.task not in LOSS_TASKS]
    runs_line = f"Runs: {', '.join(str(p) for p in paths)}."
    intro = [
        f"{runs_line} Accuracies in %, means over seeds with 95% t-intervals "
        "(clipped to [0, 100]); gaps are paired by seed, in accuracy points; the verdict uses two one-sided tests "
        f"at a margin of {margin} point(s).",
        "Steps and train time are totals over the phases; steps to reach cold: the mean first step (phases after the "
        "first) at which the arm reaches cold's end-of-phase accuracy. Per-row data: gaps.csv, strategies.csv.",
    ]
    intro = intro if accuracy else [runs_line]  # no accuracy runs: no accuracy conventions
    sections = _accuracy_sections(accuracy, out, margin) if accuracy else []
    sections += language_sections(language, out) if language else []
    fig4 = fig4_section([(r.label, r.run_dir) for r in pretraining], out)
    text = ["# Study report\n", *(f"{line}\n" for line in intro), *markdown_sections(sections), *_embed_figures(fig4)]
    atomic_write_text(out / "report.md", "\n".join(text))
    html_sections = sections + _fig4_page_section(fig4, out)
    atomic_write_text(out / "report.html", render_html("Study report", intro, html_sections))
    return out


def _accuracy_sections(runs: list[RunInfo], out: Path, margin: float) -> list[Section]:
    """One section per setting (its Fig. 1 and a strategy table per scenario), then Fig. 2 and Fig. 3;
    the figures, gaps.csv, strategies.csv and fig3.csv are written to ``out``."""
    lines = strategy_lines(runs, margin)
    to_warm = warm_gap_rows(runs, margin)
    atomic_write_text(out / "gaps.csv", _csv(gap_rows(runs, margin=margin) + to_warm))
    atomic_write_text(out / "strategies.csv", _csv(strategy_rows(runs)))
    groups: dict[str, list[RunInfo]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    sections = []
    for index, (group, members) in enumerate(sorted(groups.items(), key=lambda g: not any(r.standard for r in g[1]))):
        name = "fig1.png" if index == 0 else f"fig1-{index:02d}.png"
        plot_fig1(members, out / name)
        sections.append(_setting_section(group, members, lines, Figure(out / name, f"Fig. 1: {group}")))
    (out / "fig2.png").unlink(missing_ok=True)  # plot_fig2 draws nothing without warm and cold: no stale figure
    plot_fig2(gap_rows(runs, margin=margin), out / "fig2.png")
    if (out / "fig2.png").exists():
        caption = "Fig. 2: warm - cold, final test accuracy, per configuration (standard scheme: bold diamond)"
        sections.append(Section("Gap per configuration", [], [Figure(out / "fig2.png", caption)]))
    if to_warm:
        note = "Each strategy minus warm, paired by seed, in test-accuracy points (95% t-interval; TOST verdict)."
        table = dict_table(to_warm, WARM_GAP_COLUMNS)
        sections.append(Section("Gaps to warm", [table], [], notes=[note]))
    fig3 = fig3_rows(runs, margin)
    if fig3:
        atomic_write_text(out / "fig3.csv", _csv(fig3))
        plot_fig3(fig3, out / "fig3.png")
        note = "Means over seeds (%) with 95% t-intervals; `gap`: warm - cold paired by seed (points)."
        caption = "Fig. 3: finetuning, warm vs cold per dataset, with and without augmentation"
        table = dict_table(fig3, FIG3_COLUMNS)
        figure = Figure(out / "fig3.png", caption)
        sections.append(
            Section("Fig. 3: finetuning, average test accuracy over phases", [table], [figure], notes=[note])
        )
    return sections


def _setting_section(group: str, members: list[RunInfo], lines: dict, figure: Figure) -> Section:
    """A setting's section: what it ran, a strategy table per run (scenario), and its Fig. 1. An
    optimizer-state policy shared by every arm is stated once, not repeated on every row."""
    members = sorted(members, key=lambda r: r.scenario != "data")
    policies = {line["optimizer_state"] for r in members for line in lines[r.label]}
    columns = [c for c in REPORT_COLUMNS if c != "optimizer_state" or len(policies) > 1]
    sort = ("final_test_accuracy", "descending")
    tables = [strategy_table(lines[r.label], columns, sort, _run_title(r, group)) for r in members]
    facts = [
        ("dataset", ", ".join(sorted({r.dataset for r in members}))),
        ("task", ", ".join(sorted({r.task for r in members}))),
        ("scenario", ", ".join(r.scenario for r in members)),
        ("phases", ", ".join(sorted({str(r.num_phases) for r in members}))),
        *([("optimizer state", policies.pop())] if len(policies) == 1 else []),
        ("run", ", ".join(str(r.run_dir) for r in members)),
    ]
    return Section(group, tables, [figure], facts, any(r.standard for r in members))


def _run_title(run: RunInfo, group: str) -> str:
    return run.label if run.label != group else ""


def _embed_figures(markdown: list[str]) -> list[str]:
    """Markdown figure lists (``- `fig.png`: caption``) as embedded images."""
    return [f"![{m[2]}]({m[1]})\n" if (m := FIGURE_ITEM.match(line)) else line for line in markdown]


def _fig4_page_section(markdown: list[str], out: Path) -> list[Section]:
    """Fig. 4 (written by fig4_section) for the page: its figures and the alignment table."""
    figures = [Figure(out / m[1], m[2]) for line in markdown if (m := FIGURE_ITEM.match(line))]
    if not figures:
        return []
    with (out / "alignment.csv").open() as handle:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    table = dict_table(rows, list(rows[0]) if rows else [], decimals=5)
    return [Section("Fig. 4: pretraining loss and aligned checkpoints", [table], figures)]


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


FIGURE_ITEM = re.compile(r"^- `([^`]+\.png)`: (.*?)\s*$")
