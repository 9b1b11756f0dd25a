"""Downstream evaluation of a pretraining run (the target study's Fig. 5): every end-of-phase and
every loss-aligned checkpoint of the warm and cold arms, evaluated by each downstream recipe (a
``linear_probe`` recipe: one phase, ``pretrained`` set here), through the real loop. Results go to
``<pretraining run>/downstream/``: one run directory per recipe x checkpoint, ``downstream.csv`` and
``downstream.md`` (top-1 averaged over phases, warm vs cold, with intervals over seeds, and the paired
warm - cold gap with its interval and verdict, as Fig. 3), ``fig5.png``.

Flagged phases (``alignment.json``: no checkpoint within the tolerance) are still evaluated (the
number is in the csv, and usually costs nothing: the nearest checkpoint of an arm that never reached
the target is one of its ends of phase, evaluated anyway), but their aligned pair (both arms of that
seed x phase) never enters an aligned average or gap; downstream.md and fig5.png list them. A
linear probe's record says whether its training loss plateaued; probes that did not are marked.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.config import ConfigError, load_recipe_file, parse_config
from warmstart_hf.hub import push_downstream_cards
from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.alignment import DIRECTIONS
from warmstart_hf.report.statistics import summarize_gap, t_interval
from warmstart_hf.report.style import outside_legend, pyplot, strategy_color
from warmstart_hf.report.summary import write_rows_csv

GAP_MARGIN = 1.0  # accuracy points, as Fig. 3's equivalence margin


def checkpoints(run_dir: Path) -> list[dict[str, Any]]:
    """(arm, seed, phase, kind, path, flagged) for every end-of-phase and aligned checkpoint of the
    run; ``flagged`` marks both arms' aligned checkpoints of a phase with no pair within tolerance."""
    alignment = json.loads((run_dir / "alignment.json").read_text())
    moving_name, fixed_name = DIRECTIONS[alignment["direction"]]
    out = []
    for seed, aligned in alignment["seeds"].items():
        for p in aligned["phases"]:
            phase, flagged = p["phase"], not p["within_tolerance"]
            for arm in (moving_name, fixed_name):
                end = run_dir / f"{arm}-seed{seed}" / f"phase-{phase:02d}"
                chosen = run_dir / f"{arm}-seed{seed}" / p["chosen_snapshot"] if arm == moving_name else end
                for kind, path in (("end_of_phase", end), ("aligned", chosen)):
                    point = {"arm": arm, "seed": int(seed), "phase": phase, "kind": kind, "path": str(path)}
                    out.append({**point, "flagged": flagged and kind == "aligned"})
    return out


def evaluate_run(
    run_dir: str | Path, recipes: list[str], margin: float = GAP_MARGIN, overrides: list[str] | None = None
) -> Path:
    """Run every downstream recipe on every checkpoint (finished ones are skipped); write the tables.
    ``overrides`` (``--field value`` tokens, as on a command line) amend every recipe."""
    run_dir, overrides = Path(run_dir), list(overrides or [])
    _check_overrides(overrides)
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
            key = (recipe_path, point["path"])  # an aligned checkpoint may be the end of a phase itself
            if key not in done:
                done[key] = _evaluate(recipe, Path(recipe_path).stem, point, out, overrides)
            rows.append({**point, "recipe": Path(recipe_path).stem, **done[key]})
    write_rows_csv(out / "downstream.csv", rows)
    table, gaps = fig5_rows(rows), gap_rows(rows, margin)
    atomic_write_text(out / "downstream.md", _markdown(table, gaps, rows, margin))
    plot_fig5(table, gaps, out / "fig5.png", excluded_text(rows))
    push_downstream_cards(run_dir, rows)  # cards of the pushed branches gain their downstream results
    return out


SET_PER_CHECKPOINT = ("pretrained", "output_dir", "run_name", "seed")  # _evaluate sets them for each checkpoint


def _check_overrides(overrides: list[str]) -> None:
    """Refuse an override of what each checkpoint's evaluation sets itself."""
    for token in overrides:
        field = token[2:].split("=", 1)[0] if token.startswith("--") else None
        if field in SET_PER_CHECKPOINT:
            raise ConfigError(
                f"Command-line field `{field}` is set for every checkpoint by evaluate_pretraining.py (the "
                f"checkpoint, its seed and where its result goes: {', '.join(SET_PER_CHECKPOINT)}). Fix: drop "
                f"--{field}; override other fields only, e.g. --num_train_epochs 2."
            )


def _evaluate(recipe: dict, stem: str, point: dict, out: Path, overrides: list[str]) -> dict[str, Any]:
    """One downstream run on one checkpoint (resumable like any run); its outcome. The run's own
    console header and table name the probe's single training schedule (strategy ``warm``, one phase),
    not the checkpoint's arm, so they are kept out of the console: a line before and after says which
    arm, seed, phase and checkpoint is evaluated, and the result."""
    from warmstart_hf.loop import run_experiment

    name = f"{stem}/{point['arm']}-seed{point['seed']}-phase{point['phase']:02d}-{point['kind']}"
    fixed = {"pretrained": point["path"], "output_dir": str(out), "run_name": name, "seed": point["seed"]}
    print(f"{stem}: evaluating {describe_checkpoint(point)}", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        result = outcome(run_experiment(parse_config(overrides, recipe={**recipe, **fixed})))
    print(f"{stem}: {describe_checkpoint(point)}: top-1 {100 * result['test_accuracy']:.2f}% ({out / name})")
    return result


def describe_checkpoint(point: dict[str, Any]) -> str:
    """E.g. ``arm cold, seed 0, phase 2, end_of_phase checkpoint runs/mae_demo/cold-seed0/phase-02``."""
    where = f"arm {point['arm']}, seed {point['seed']}, phase {point['phase']}"
    return f"{where}, {point['kind']} checkpoint {point['path']}"


def outcome(result_dir: Path) -> dict[str, Any]:
    """A downstream run's final test accuracy and, from its last record, whether its training loss
    plateaued and the share of its high-LR drop made late (``metrics/convergence.py``; None: not
    recorded, e.g. a finetuning recipe: unknown, not failed)."""
    records = [r for f in sorted(Path(result_dir).glob("*/results.jsonl")) for r in read_jsonl(f)]
    last = records[-1]
    return {
        "test_accuracy": last["test_accuracy"],
        "plateaued": last.get("train_loss_plateaued"),
        "train_loss_tail_fraction": last.get("train_loss_tail_fraction"),
    }


def _averaged(r: dict[str, Any]) -> bool:
    """Whether a row enters the averages: a flagged aligned pair never does."""
    return not r.get("flagged")


def per_seed_means(rows: list[dict[str, Any]]) -> dict[tuple, dict[int, float]]:
    """(recipe, kind, arm) -> seed -> top-1 (%) averaged over that seed's phases, flagged pairs left out."""
    values: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if _averaged(r):
            values[(r["recipe"], r["kind"], r["arm"])][r["seed"]].append(100 * r["test_accuracy"])
    return {key: {s: float(np.mean(v)) for s, v in seeds.items()} for key, seeds in values.items()}


def fig5_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe x checkpoint kind x arm: top-1 averaged over phases, mean and 95% interval over
    seeds, and how many of its downstream runs did not plateau."""
    stalled = defaultdict(int)
    for r in rows:
        stalled[(r["recipe"], r["kind"], r["arm"])] += r.get("plateaued") is False and _averaged(r)
    table = []
    for (recipe, kind, arm), seeds in sorted(per_seed_means(rows).items()):
        mean, low, high = t_interval(list(seeds.values()))
        cell = {"recipe": recipe, "checkpoint": kind, "arm": arm, "seeds": len(seeds)}
        table.append(
            {**cell, "mean": mean, "ci_low": low, "ci_high": high, "not_plateaued": stalled[recipe, kind, arm]}
        )
    return table


def gap_rows(rows: list[dict[str, Any]], margin: float = GAP_MARGIN) -> list[dict[str, Any]]:
    """Per recipe x checkpoint kind: the warm - cold gap of top-1 averaged over phases, paired by seed
    (over the same phases in both arms: a flagged pair leaves both out), its 95% interval over seeds
    and the equivalence verdict within +-``margin`` points (report/statistics.summarize_gap)."""
    means = per_seed_means(rows)
    table = []
    for recipe, kind in sorted({(r, k) for r, k, _ in means}):
        warm, cold = means.get((recipe, kind, "warm"), {}), means.get((recipe, kind, "cold"), {})
        seeds = sorted(set(warm) & set(cold))
        if not seeds:
            continue
        gaps = [warm[s] - cold[s] for s in seeds]
        summary = summarize_gap(gaps, margin)
        table.append(
            {
                "recipe": recipe,
                "checkpoint": kind,
                "seeds": len(seeds),
                "gap_mean": summary.mean,
                "gap_ci_low": summary.ci_low,
                "gap_ci_high": summary.ci_high,
                "verdict": summary.verdict,
            }
        )
    return table


def excluded_text(rows: list[dict[str, Any]]) -> str:
    """The flagged seed x phase pairs, e.g. ``seed 0: [2]; seed 1: [1, 2]``, or ``none``."""
    flagged = sorted({(r["seed"], r["phase"]) for r in rows if r.get("flagged")})
    by_seed = defaultdict(list)
    for seed, phase in flagged:
        by_seed[seed].append(phase)
    return "; ".join(f"seed {s}: {phases}" for s, phases in sorted(by_seed.items())) or "none"


def plateau_note(rows: list[dict[str, Any]]) -> list[str]:
    """One footnote per recipe whose probes did not all plateau: n of m (m: runs with the mark)."""
    notes = []
    for recipe in sorted({r["recipe"] for r in rows}):
        runs = {}
        for r in rows:
            if r["recipe"] == recipe and r.get("plateaued") is not None:
                runs.setdefault(r["path"], r)  # one run per checkpoint, named by its first row
        stalled = [r for r in runs.values() if not r["plateaued"]]
        if stalled:
            names = ", ".join(f"{r['arm']} seed {r['seed']} phase {r['phase']} {r['kind']}" for r in stalled)
            notes.append(f"{len(stalled)} of {len(runs)} probes of `{recipe}` did not plateau: {names}")
    return notes


def _markdown(
    table: list[dict[str, Any]], gaps: list[dict[str, Any]], rows: list[dict[str, Any]], margin: float
) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| downstream recipe | checkpoint | arm | seeds | top-1 averaged over phases (%) | 95% interval |"]
    lines.append("|---|---|---|---|---|---|")
    for t in table:
        mark = " \u2020" if t["not_plateaued"] else ""
        lines.append(
            f"| {t['recipe']} | {t['checkpoint']} | {t['arm']} | {t['seeds']} | {fmt(t['mean'])}{mark} | "
            f"[{fmt(t['ci_low'])}, {fmt(t['ci_high'])}] |"
        )
    lines += [
        "",
        f"Paired warm - cold gap (points; per seed over the same phases), equivalence margin +-{margin:g}:",
        "",
    ]
    lines += [
        "| downstream recipe | checkpoint | seeds | warm - cold | 95% interval | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {g['recipe']} | {g['checkpoint']} | {g['seeds']} | {fmt(g['gap_mean'])} | "
        f"[{fmt(g['gap_ci_low'])}, {fmt(g['gap_ci_high'])}] | {g['verdict']} |"
        for g in gaps
    ]
    lines += ["", f"aligned: phases excluded (flagged, both arms): {excluded_text(rows)}"]
    lines += ["", *(f"\u2020 {note}" for note in plateau_note(rows))]
    return "\n".join(lines).rstrip() + "\n"


def plot_fig5(table: list[dict[str, Any]], gaps: list[dict[str, Any]], path: Path, excluded: str = "none") -> None:
    """Left: top-1 averaged over phases per recipe x checkpoint kind, warm and cold, 95% intervals.
    Right: the paired warm - cold gap with its 95% interval. The flagged pairs left out are named."""
    plt = pyplot()
    labels = sorted({(t["recipe"], t["checkpoint"]) for t in table})
    ticks = [f"{r}\n{k}" for r, k in labels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(3.2 * len(labels) + 4, 4.8), layout="constrained")
    for offset, arm in ((-0.2, "warm"), (0.2, "cold")):
        cells = [t for key in labels for t in table if (t["recipe"], t["checkpoint"]) == key and t["arm"] == arm]
        xs = [labels.index((c["recipe"], c["checkpoint"])) + offset for c in cells]
        err, color = _whiskers(cells, "mean", "ci"), strategy_color(arm)
        left.bar(xs, [c["mean"] for c in cells], 0.4, yerr=err, capsize=3, color=color, label=arm)
    left.set_xticks(range(len(labels)), ticks, fontsize="small")
    left.set_ylabel("top-1 averaged over phases (%)")
    outside_legend(fig, [left])
    xs = [labels.index((g["recipe"], g["checkpoint"])) for g in gaps]
    right.bar(
        xs, [g["gap_mean"] for g in gaps], 0.5, yerr=_whiskers(gaps, "gap_mean", "gap_ci"), capsize=3, color="tab:gray"
    )
    right.axhline(0, color="black", lw=0.8)
    right.set_xticks(range(len(labels)), ticks, fontsize="small")
    right.set_ylabel("warm - cold, paired by seed (points)")
    fig.suptitle(
        f"Downstream evaluation of the pretraining checkpoints (Fig. 5); whiskers: 95% intervals over seeds "
        "(none with one seed)\n"
        f"aligned: flagged phases excluded: {excluded}",
        fontsize="medium",
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _whiskers(cells: list[dict[str, Any]], mean: str, ci: str) -> np.ndarray:
    """Error bars (2 x n) from mean and interval bounds; none drawn where the interval is undefined (one seed)."""
    pairs = [
        (np.nan, np.nan) if c[f"{ci}_low"] is None else (c[mean] - c[f"{ci}_low"], c[f"{ci}_high"] - c[mean])
        for c in cells
    ]
    return np.array(pairs, dtype=float).T.reshape(2, len(cells))
