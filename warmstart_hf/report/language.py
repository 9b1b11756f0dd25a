"""The summary of a causal-LM run: the pretraining summary (probe losses, alignment, Fig. 4), then per
strategy the held-out perplexity, the tokens and FLOPs trained, and warm's compute saving: the tokens
warm needed in a phase to reach cold's end-of-phase probe loss."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.io import atomic_write_text
from warmstart_hf.report.pretraining import write_pretraining_summary
from warmstart_hf.report.summary import load_run_results, write_rows_csv


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
