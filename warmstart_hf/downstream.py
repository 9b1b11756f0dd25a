"""Downstream evaluation of a pretraining run (the target study's Fig. 5): every end-of-phase and
every loss-aligned checkpoint of the warm and cold arms, evaluated by each downstream recipe (a
``linear_probe`` recipe: one phase, ``pretrained`` set here), through the real loop. Results go to
``<pretraining run>/downstream/``: one run directory per recipe x checkpoint, ``downstream.csv`` and
``downstream.md`` (top-1 averaged over phases, warm vs cold, with intervals over seeds), ``fig5.png``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.config import ConfigError, load_recipe_file, parse_config
from warmstart_hf.hub import push_downstream_cards
from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.alignment import DIRECTIONS
from warmstart_hf.report.statistics import t_interval
from warmstart_hf.report.summary import write_rows_csv


def checkpoints(run_dir: Path) -> list[dict[str, Any]]:
    """(arm, seed, phase, kind, path) for every end-of-phase and aligned checkpoint of the run."""
    alignment = json.loads((run_dir / "alignment.json").read_text())
    moving_name, fixed_name = DIRECTIONS[alignment["direction"]]
    out = []
    for seed, aligned in alignment["seeds"].items():
        for p in aligned["phases"]:
            phase = p["phase"]
            for arm in (moving_name, fixed_name):
                end = run_dir / f"{arm}-seed{seed}" / f"phase-{phase:02d}"
                chosen = run_dir / f"{arm}-seed{seed}" / p["chosen_snapshot"] if arm == moving_name else end
                for kind, path in (("end_of_phase", end), ("aligned", chosen)):
                    out.append({"arm": arm, "seed": int(seed), "phase": phase, "kind": kind, "path": str(path)})
    return out


def evaluate_run(run_dir: str | Path, recipes: list[str]) -> Path:
    """Run every downstream recipe on every checkpoint (finished ones are skipped); write the tables."""
    run_dir = Path(run_dir)
    if not (run_dir / "alignment.json").exists():
        raise ConfigError(
            f"{run_dir} has no alignment.json: evaluate a finished mae_pretrain run with warm and cold arms "
            "(its summary writes the alignment). Fix: run the pretraining recipe to the end first."
        )
    out = run_dir / "downstream"
    rows, done = [], {}
    for recipe_path in recipes:
        recipe = load_recipe_file(recipe_path)
        for point in checkpoints(run_dir):
            key = (recipe_path, point["path"])  # an aligned checkpoint may be the end of the phase itself
            if key not in done:
                done[key] = _evaluate(recipe, Path(recipe_path).stem, point, out)
            rows.append({**point, "recipe": Path(recipe_path).stem, "test_accuracy": done[key]})
    write_rows_csv(out / "downstream.csv", rows)
    table = fig5_rows(rows)
    atomic_write_text(out / "downstream.md", _markdown(table))
    plot_fig5(table, out / "fig5.png")
    push_downstream_cards(run_dir, rows)  # cards of the pushed branches gain their downstream results
    return out


def _evaluate(recipe: dict, stem: str, point: dict, out: Path) -> float:
    """One downstream run on one checkpoint (resumable like any run); its final test accuracy."""
    from warmstart_hf.loop import run_experiment

    name = f"{stem}/{point['arm']}-seed{point['seed']}-phase{point['phase']:02d}-{point['kind']}"
    overrides = {"pretrained": point["path"], "output_dir": str(out), "run_name": name, "seed": point["seed"]}
    result_dir = run_experiment(parse_config(recipe={**recipe, **overrides}))
    records = [r for f in sorted(result_dir.glob("*/results.jsonl")) for r in read_jsonl(f)]
    return records[-1]["test_accuracy"]


def fig5_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe x checkpoint kind x arm: top-1 averaged over phases, mean and 95% interval over seeds."""
    per_seed: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per_seed[(r["recipe"], r["kind"], r["arm"])][r["seed"]].append(100 * r["test_accuracy"])
    table = []
    for (recipe, kind, arm), seeds in sorted(per_seed.items()):
        mean, low, high = t_interval([float(np.mean(v)) for v in seeds.values()])
        table.append(
            {
                "recipe": recipe,
                "checkpoint": kind,
                "arm": arm,
                "seeds": len(seeds),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return table


def _markdown(table: list[dict[str, Any]]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| downstream recipe | checkpoint | arm | seeds | top-1 averaged over phases (%) | 95% interval |"]
    lines.append("|---|---|---|---|---|---|")
    lines += [
        f"| {t['recipe']} | {t['checkpoint']} | {t['arm']} | {t['seeds']} | {fmt(t['mean'])} | "
        f"[{fmt(t['ci_low'])}, {fmt(t['ci_high'])}] |"
        for t in table
    ]
    return "\n".join(lines) + "\n"


def plot_fig5(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({(t["recipe"], t["checkpoint"]) for t in table})
    fig, ax = plt.subplots(figsize=(2.2 * len(labels) + 2, 4), constrained_layout=True)
    for offset, arm in ((-0.2, "warm"), (0.2, "cold")):
        cells = {(t["recipe"], t["checkpoint"]): t for t in table if t["arm"] == arm}
        xs = [i + offset for i, key in enumerate(labels) if key in cells]
        means = [cells[key]["mean"] for key in labels if key in cells]
        ax.bar(xs, means, 0.4, label=arm)
    ax.set_xticks(range(len(labels)), [f"{r}\n{k}" for r, k in labels], fontsize="small")
    ax.set_ylabel("top-1 averaged over phases (%)")
    ax.set_title("Downstream evaluation of the pretraining checkpoints (Fig. 5)", fontsize="medium")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
