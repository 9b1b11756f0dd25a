"""The summary of a causal-LM run: the pretraining summary (probe losses, alignment, Fig. 4), then per
strategy the held-out perplexity, the tokens and FLOPs trained, and warm's compute saving: the tokens
warm needed in a phase to reach cold's end-of-phase probe loss. A study report (``report/study.py``)
over causal-LM runs (a sweep such as ``recipes/sweeps/lm_grid.yaml``) gets the same table per
configuration and the paired gap to cold in final held-out loss (:func:`language_sections`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.io import atomic_write_text
from warmstart_hf.report.pages import Section, dict_table
from warmstart_hf.report.pretraining import write_pretraining_summary
from warmstart_hf.report.statistics import t_interval
from warmstart_hf.report.summary import load_run_results, write_rows_csv

STUDY_COLUMNS = [
    "configuration",
    "strategy",
    "seeds",
    "final_perplexity",
    "mean_perplexity",
    "tokens",
    "flops",
    "saving_vs_cold",
    "loss_gap_vs_cold",
    "loss_gap_ci_low",
    "loss_gap_ci_high",
]


def tokens_to_reach(record: dict[str, Any], target: float) -> int | None:
    """The tokens a phase had trained when its probe curve first reached ``target`` (None: never). A
    curve point's tokens are its step x the phase's tokens per step."""
    per_step = record["train_tokens"] / record["steps"] if record["steps"] else 0
    for point in record["probe_curve"]:
        if point["probe_loss"] <= target:
            return round(point["step"] * per_step)
    return None


def compute_savings(warm: list[dict[str, Any]], cold: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per phase after the first: cold's tokens, the tokens warm needed to reach cold's final probe
    loss, and the saving ``1 - warm / cold`` (None when warm never reached it)."""
    rows = []
    for w, c in zip(warm[1:], cold[1:]):
        needed = tokens_to_reach(w, c["probe_loss"])
        saving = None if needed is None else 1 - needed / c["train_tokens"]
        rows.append({"phase": w["phase"], "cold_tokens": c["train_tokens"], "warm_tokens": needed, "saving": saving})
    return rows


def language_rows(arms: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per strategy: seed means of the final and mean-over-phases held-out perplexity, the
    tokens and FLOPs of the whole arm, and (warm) the mean compute saving against cold."""
    by_strategy: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for records in arms.values():
        by_strategy[records[0]["strategy"]][records[0]["seed"]] = records
    rows = []
    for strategy, seeds in sorted(by_strategy.items()):
        cold = by_strategy.get("cold", {})
        savings = [
            s["saving"]
            for seed, records in seeds.items()
            if strategy != "cold" and seed in cold
            for s in compute_savings(records, cold[seed])
            if s["saving"] is not None
        ]
        runs = list(seeds.values())
        rows.append(
            {
                "strategy": strategy,
                "seeds": len(seeds),
                "final_perplexity": float(np.mean([r[-1]["validation_perplexity"] for r in runs])),
                "mean_perplexity": float(np.mean([np.mean([p["validation_perplexity"] for p in r]) for r in runs])),
                "tokens": float(np.mean([sum(p["train_tokens"] for p in r) for r in runs])),
                "flops": float(np.mean([sum(p["train_flops"] for p in r) for r in runs])),
                "saving_vs_cold": float(np.mean(savings)) if savings else None,
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | seeds | final perplexity | mean perplexity | tokens | FLOPs (6ND) | tokens saved vs cold |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saving = "-" if r["saving_vs_cold"] is None else f"{r['saving_vs_cold']:.0%}"
        lines.append(
            f"| {r['strategy']} | {r['seeds']} | {r['final_perplexity']:.3f} | {r['mean_perplexity']:.3f} | "
            f"{r['tokens']:,.0f} | {r['flops']:.3g} | {saving} |"
        )
    return "\n".join(lines) + "\n"


def write_language_summary(run_dir: str | Path) -> str:
    """summary.md (the pretraining summary, then the language table), summary.csv (probe losses) and
    language.csv. Returns the language table."""
    run_dir = Path(run_dir)
    write_pretraining_summary(run_dir, probe="the next-token loss on a fixed sample of held-out blocks")
    rows = language_rows(load_run_results(run_dir))
    table = _table(rows)
    write_rows_csv(run_dir / "language.csv", rows)
    text = (run_dir / "summary.md").read_text()
    text += (
        "\nHeld-out perplexity: exp of the mean next-token loss over the held-out documents of the chunks (or "
        "domains) seen so far. Tokens and FLOPs: the whole arm, 6 x parameters x tokens. Tokens saved: per phase "
        "after the first, 1 - (tokens warm trained until its probe loss reached cold's end-of-phase loss) / "
        "(cold's tokens), averaged over phases and seeds where warm reached it.\n\n" + table
    )
    atomic_write_text(run_dir / "summary.md", text)
    return table


def final_loss_gaps(arms: dict[tuple[str, int], list[dict[str, Any]]], strategy: str, phases: int) -> list[float]:
    """Per seed with both arms finished: ``strategy``'s final held-out loss minus cold's (nats)."""
    done = {key: records for key, records in arms.items() if len(records) == phases}
    seeds = sorted(seed for name, seed in done if name == strategy and ("cold", seed) in done)
    return [done[(strategy, s)][-1]["validation_loss"] - done[("cold", s)][-1]["validation_loss"] for s in seeds]


def loss_gap_vs_cold(arms: dict[tuple[str, int], list[dict[str, Any]]], strategy: str, phases: int) -> dict:
    """``loss_gap_vs_cold`` (mean of :func:`final_loss_gaps`) and its 95% t-interval; None for cold or no pair."""
    gaps = final_loss_gaps(arms, strategy, phases) if strategy != "cold" else []
    mean, low, high = t_interval(gaps) if gaps else (None, None, None)
    return {"loss_gap_vs_cold": mean, "loss_gap_ci_low": low, "loss_gap_ci_high": high}


def study_rows(label: str, arms: dict[tuple[str, int], list[dict[str, Any]]], phases: int) -> list[dict[str, Any]]:
    """One configuration's language rows (finished arms), each with its paired final-loss gap to cold."""
    finished = {f"{name}-seed{seed}": r for (name, seed), r in arms.items() if len(r) == phases}
    rows = language_rows(finished) if finished else []
    return [{"configuration": label, **row, **loss_gap_vs_cold(arms, row["strategy"], phases)} for row in rows]


def language_sections(runs: list, out: Path) -> list[Section]:
    """The study report's language-model section (``runs``: study.RunInfo of causal_lm runs); writes
    ``language.csv`` to ``out``."""
    rows = [row for run in runs for row in study_rows(run.label, run.arms, run.num_phases)]
    write_rows_csv(out / "language.csv", rows)
    notes = [
        "Held-out perplexity and tokens as in each run's summary.md; means over seeds. `loss_gap_vs_cold`: the "
        "strategy's final held-out loss minus cold's, paired by seed, in nats (negative: lower than cold), with "
        "its 95% t-interval (none with one seed). Per-row data: language.csv."
    ]
    shown = [{**r, "tokens": round(r["tokens"]), "flops": f"{r['flops']:.3g}"} for r in rows]
    table = dict_table(shown, STUDY_COLUMNS, 3)
    return [Section("Language models: held-out perplexity and compute", [table], notes=notes)]
