"""The summary of a pretraining run (task mae_pretrain): probe losses per strategy, loss-aligned
checkpoints (``alignment.json``) and Fig. 4 (loss curves across phases; the probe-loss difference
of the end-of-phase and of the aligned checkpoints)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from warmstart_hf.io import atomic_write_text
from warmstart_hf.report.alignment import DIRECTIONS, chosen_phase, write_alignment
from warmstart_hf.report.style import outside_legend, pyplot, set_phase_axis, strategy_color
from warmstart_hf.report.summary import load_run_results, optimizer_policies, write_rows_csv


def pretraining_rows(arms: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per strategy: seed means of the final and the mean-over-phases probe loss, and the
    gap to cold paired by seed."""
    by_strategy: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for records in arms.values():
        by_strategy[records[0]["strategy"]][records[0]["seed"]] = records
    cold = by_strategy.get("cold", {})
    rows = []
    for strategy, seeds in sorted(by_strategy.items()):
        final = {s: r[-1]["probe_loss"] for s, r in seeds.items()}
        gaps = [final[s] - cold[s][-1]["probe_loss"] for s in seeds if s in cold and len(cold[s]) == len(seeds[s])]
        rows.append(
            {
                "strategy": strategy,
                "optimizer_state": optimizer_policies(seeds.values()),
                "seeds": len(seeds),
                "phases_done": min(len(r) for r in seeds.values()),
                "final_probe_loss": float(np.mean(list(final.values()))),
                "mean_probe_loss": float(np.mean([np.mean([p["probe_loss"] for p in r]) for r in seeds.values()])),
                "gap_vs_cold_final": float(np.mean(gaps)) if gaps and strategy != "cold" else None,
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | optimizer state | seeds | phases | final probe loss | mean probe loss | gap vs cold, final |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        gap = "-" if r["gap_vs_cold_final"] is None else f"{r['gap_vs_cold_final']:+.4f}"
        lines.append(
            f"| {r['strategy']} | {r['optimizer_state']} | {r['seeds']} | {r['phases_done']} | "
            f"{r['final_probe_loss']:.4f} | {r['mean_probe_loss']:.4f} | {gap} |"
        )
    return "\n".join(lines) + "\n"


MAE_PROBE = "the pretraining loss on a fixed probe set with fixed masks"


def write_pretraining_summary(run_dir: str | Path, probe: str = MAE_PROBE) -> str:
    """summary.md/csv; with warm and cold arms also alignment.json and fig4.png. Returns the table."""
    run_dir = Path(run_dir)
    arms = load_run_results(run_dir)
    rows = pretraining_rows(arms)
    table = _table(rows)
    write_rows_csv(run_dir / "summary.csv", rows)
    text = f"# {run_dir.name}\n\nProbe loss: {probe}.\n\n{table}"
    strategies = {records[0]["strategy"] for records in arms.values()}
    if {"warm", "cold"} <= strategies:
        inc = yaml.safe_load((run_dir / "config.yaml").read_text())["incremental"]
        direction, tolerance = inc.get("alignment_direction", "warm_to_cold"), inc.get("alignment_tolerance", 0.01)
        alignment = json.loads(write_alignment(run_dir, direction, tolerance).read_text())
        plot_fig4(arms, alignment, run_dir / "fig4.png")
        flagged = {seed: a["flagged"] for seed, a in alignment["seeds"].items() if a["flagged"]}
        text += f"\nAligned checkpoints ({direction}, tolerance {tolerance}): alignment.json; fig4.png. "
        text += "Phases with no pair within tolerance (flagged: hatched in fig4.png, left out of Fig. 5's aligned "
        text += f"averages): {flagged or 'none'}.\n"
    atomic_write_text(run_dir / "summary.md", text)
    return table


def plot_probe_curves(arms: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Each arm's probe loss over the steps of all its phases (phases laid end to end)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.4), layout="constrained")
    _probe_curves(ax, arms)
    outside_legend(fig, [ax])
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _probe_curves(ax, arms: dict[str, list[dict[str, Any]]]) -> None:
    """One line per arm in its strategy's colour (labelled once per strategy), the phase boundaries
    dashed and each phase named (0-based) above its stretch of steps."""
    seen, counts = set(), Counter(records[0]["strategy"] for records in arms.values())
    for _, records in sorted(arms.items()):
        starts, xs, ys = phase_offsets(records), [], []
        for record in records:
            xs += [starts[record["phase"]] + p["step"] for p in record["probe_curve"]]
            ys += [p["probe_loss"] for p in record["probe_curve"]]
        strategy = records[0]["strategy"]
        label = None if strategy in seen else f"{strategy} (n={counts[strategy]})"
        seen.add(strategy)
        ax.plot(xs, ys, color=strategy_color(strategy), alpha=0.85, lw=1.3, label=label)
    longest = max(arms.values(), key=lambda records: sum(r["steps"] for r in records))
    starts = phase_offsets(longest)
    for boundary in list(starts.values())[1:]:
        ax.axvline(boundary, color="dimgray", lw=0.9, ls="--", alpha=0.7)
    for record in longest:  # the phase names, at the top of the axes (axes coordinates in y)
        middle = starts[record["phase"]] + record["steps"] / 2
        ax.text(
            middle,
            0.98,
            f"phase {record['phase']}",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize="small",
            color="dimgray",
        )
    ax.set_xlabel("optimizer step (phases end to end; dashed: phase boundaries)")
    ax.set_ylabel("probe loss")


def phase_offsets(records: list[dict[str, Any]]) -> dict[int, int]:
    """Phase -> the step at which it starts when an arm's phases are laid end to end."""
    starts, offset = {}, 0
    for record in records:
        starts[record["phase"]] = offset
        offset += record["steps"]
    return starts


def plot_fig4(arms: dict[str, list[dict[str, Any]]], alignment: dict[str, Any], path: Path):
    """Left: each arm's probe loss over the steps of all phases (phases laid end to end and named),
    each phase's target (the fixed arm's end of phase) joined to the moving arm's chosen checkpoint
    (x: flagged). Right: per phase, warm - cold probe loss at the end of the phase and between the
    aligned checkpoints (seed means); a phase flagged in any seed is hatched and annotated, not left
    out. Returns the figure."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    _probe_curves(left, arms)
    _mark_aligned(left, arms, alignment)
    left.set_title("probe loss; aligned checkpoints", fontsize="medium")
    _gap_bars(right, alignment)
    outside_legend(fig, [left, right])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def _gap_bars(ax, alignment: dict[str, Any]) -> None:
    """Per phase the seed-mean warm - cold probe loss, end of phase vs aligned, in neutral colours (the
    strategy colours belong to the arms)."""
    sign = 1.0 if DIRECTIONS[alignment["direction"]][0] == "warm" else -1.0  # report warm - cold
    by_phase, flagged = defaultdict(lambda: defaultdict(list)), defaultdict(int)
    for seed in alignment["seeds"].values():
        for p in seed["phases"]:
            for key in ("end_of_phase_gap", "gap"):
                by_phase[key][p["phase"]].append(sign * p[key])
            flagged[p["phase"]] += not p["within_tolerance"]
    phases = sorted(by_phase["gap"])
    end = [np.mean(by_phase["end_of_phase_gap"][p]) for p in phases]
    ends = ax.bar([p - 0.2 for p in phases], end, 0.4, color="silver", edgecolor="black", lw=0.6, label="end of phase")
    aligned = [np.mean(by_phase["gap"][p]) for p in phases]
    hatches = ["//" if flagged[p] else None for p in phases]
    label = "aligned checkpoints" + (" (hatched: flagged, outside the tolerance)" if any(hatches) else "")
    bars = ax.bar(
        [p + 0.2 for p in phases], aligned, 0.4, color="dimgray", edgecolor="black", lw=0.6, hatch=hatches, label=label
    )
    for group in (ends, bars):
        ax.bar_label(group, fmt="%+.2g", fontsize="x-small", padding=2)
    for bar, p in zip(bars, phases):
        if flagged[p]:
            ax.annotate(
                f"flagged {flagged[p]}/{len(by_phase['gap'][p])}",
                (bar.get_x(), 0),
                fontsize="x-small",
                xytext=(0, 12),
                textcoords="offset points",
            )
    ax.axhline(0, color="black", lw=0.8)
    low, high = min(0.0, *end, *aligned), max(0.0, *end, *aligned)
    pad = 0.15 * (high - low) or 1e-3  # room for the value labels (bars stick to 0, so margins() adds none)
    ax.set_ylim(low - pad, high + pad)
    set_phase_axis(ax, phases)
    ax.set_ylabel("warm - cold probe loss (below 0: warm lower)")
    ax.set_title(f"gap per phase ({alignment['direction']}, tolerance {alignment['tolerance']})", fontsize="medium")
    ax.grid(alpha=0.3, axis="y")


def _mark_aligned(ax, arms: dict[str, list[dict[str, Any]]], alignment: dict[str, Any]) -> None:
    """Per seed and phase, the target (the fixed arm's end of phase: square) joined by a dotted line to
    the moving arm's chosen checkpoint (o within the tolerance, x flagged)."""
    moving, fixed = DIRECTIONS[alignment["direction"]]
    labels = {
        "target": f"target: {fixed} end of phase",
        "o": f"chosen {moving} checkpoint",
        "x": f"flagged: no {moving} checkpoint within the tolerance",
    }
    for seed, aligned in alignment["seeds"].items():
        records, targets = arms.get(f"{moving}-seed{seed}"), arms.get(f"{fixed}-seed{seed}")
        if not records or not targets:
            continue
        starts, target_starts = phase_offsets(records), phase_offsets(targets)
        for p in aligned["phases"]:
            x = starts.get(chosen_phase(p), 0) + p["chosen_step"]
            target_x = target_starts.get(p["phase"], 0) + p.get("target_step", 0)
            marker = "o" if p["within_tolerance"] else "x"
            ax.plot([target_x, x], [p["target_loss"], p["chosen_loss"]], color="black", lw=0.7, ls=":")
            ax.plot(target_x, p["target_loss"], "s", mfc="none", color="black", ms=6, label=labels.pop("target", None))
            ax.plot(x, p["chosen_loss"], marker, color="black", ms=5, label=labels.pop(marker, None))


ALIGNMENT_COLUMNS = [
    "run",
    "seed",
    "phase",
    "target_loss",
    "chosen_phase",
    "chosen_step",
    "chosen_loss",
    "gap",
    "end_of_phase_gap",
    "flagged",
]


def fig4_section(runs: list[tuple[str, Path]], out: Path) -> list[str]:
    """For the study report: per pretraining run (label, directory) with an ``alignment.json``, Fig. 4
    into ``out`` and one table of the aligned pairs of every seed and phase."""
    lines, rows = [], []
    for index, (label, run_dir) in enumerate(runs):
        if not (run_dir / "alignment.json").exists():
            continue
        alignment = json.loads((run_dir / "alignment.json").read_text())
        name = "fig4.png" if index == 0 else f"fig4-{index:02d}.png"
        plot_fig4(load_run_results(run_dir), alignment, out / name)
        lines.append(f"- `{name}`: {label} ({alignment['direction']}, tolerance {alignment['tolerance']})\n")
        for seed, aligned in alignment["seeds"].items():
            for p in aligned["phases"]:
                cells = {**p, "chosen_phase": chosen_phase(p), "flagged": "" if p["within_tolerance"] else "flagged"}
                rows.append({"run": label, "seed": seed, **{k: cells[k] for k in ALIGNMENT_COLUMNS[2:]}})
    if not rows:
        return []
    write_rows_csv(out / "alignment.csv", rows)
    table = ["| " + " | ".join(ALIGNMENT_COLUMNS) + " |", "|" + "---|" * len(ALIGNMENT_COLUMNS)]
    for r in rows:
        cells = [f"{r[c]:.5f}" if isinstance(r[c], float) else str(r[c]) for c in ALIGNMENT_COLUMNS]
        table.append("| " + " | ".join(cells) + " |")
    intro = (
        "Probe losses of the aligned pairs: the chosen checkpoint (phase and step; it may lie in an earlier phase) "
        "vs the target arm's end of phase. Flagged: no checkpoint within the tolerance; Fig. 5 leaves that pair "
        "out of its aligned averages.\n"
    )
    return ["## Fig. 4: pretraining loss and aligned checkpoints\n", intro, "\n".join(table) + "\n", *lines]
