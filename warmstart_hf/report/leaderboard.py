"""The project's self-hosted leaderboard: a results dataset on the Hub plus markdown/HTML pages.

The Hub builds leaderboards only for registered benchmark datasets (https://huggingface.co/docs/hub/eval-results),
not from a card's ``model-index``, so results are collected here: one row
per arm x phase (dataset, scenario, strategy, seed, phase, metrics, recipe hash, code version) from
run or sweep directories or from the cards of pushed arm repos (their ``warmstart_hf`` metadata),
pushed as a ``datasets`` dataset, and turned into one section per experiment (dataset, scenario, run,
recipe hash): per strategy the seed mean of final and average-incremental test accuracy with its 95%
interval, the gap to cold paired by seed with its interval and verdict (the study report's
statistics), and the experiment's accuracy-per-phase figure.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.language import loss_gap_vs_cold
from warmstart_hf.report.pages import Figure, Section, dict_table, markdown_sections, strategy_table
from warmstart_hf.report.pages import render_html as render_page
from warmstart_hf.report.study import RunInfo, find_run_dirs, plot_fig1, strategy_lines

ROW_FIELDS: dict[str, str] = {
    "source": "string",
    "run": "string",
    "dataset": "string",
    "scenario": "string",
    "strategy": "string",
    "seed": "int64",
    "phase": "int64",
    "num_phases": "int64",
    "num_train_examples": "int64",
    "train_accuracy": "float64",
    "train_loss": "float64",
    "test_accuracy": "float64",
    "test_accuracy_masked": "float64",
    "test_accuracy_full": "float64",
    "dormant_fraction": "float64",
    "effective_rank": "float64",
    "validation_loss": "float64",  # language models (causal_lm): held-out next-token loss, its exp, tokens
    "validation_perplexity": "float64",
    "train_tokens": "int64",
    "recipe_hash": "string",
    "code_version": "string",
    "standard": "bool",
}
GROUP_FIELDS = ("dataset", "scenario", "run", "recipe_hash")
SORT_METRICS = (
    "final_test_accuracy",
    "avg_incremental_test_accuracy",
    "gap_vs_cold_final",
    "gap_vs_cold_avg",
    "final_train_accuracy",
)
HUB_SCHEME = "hub://"
LANGUAGE_FIELDS = ("validation_loss", "validation_perplexity", "train_tokens")
LANGUAGE_COLUMNS = ["strategy", "seeds", "phases_done", "final_perplexity", "mean_perplexity", "tokens"]
LANGUAGE_COLUMNS += ["loss_gap_vs_cold", "loss_gap_ci_low", "loss_gap_ci_high"]


def _rows(summary: dict[str, Any], source: str) -> list[dict[str, Any]]:
    base = {k: v for k, v in summary.items() if k != "phases"}
    return [{name: {"source": source, **base, **phase}.get(name) for name in ROW_FIELDS} for phase in summary["phases"]]


def rows_from_run_dir(path: str | Path) -> list[dict[str, Any]]:
    """Rows of every arm of a run directory, or of every run of a sweep directory (``sweep.json``) or
    of a folder of runs: what the study report accepts."""
    from warmstart_hf.hub import arm_summary

    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise ValueError(
            f"{str(path)!r} is neither a run directory (config.yaml) nor a sweep directory (sweep.json), and no run "
            "directory lies below it. Fix: pass runs/<run_name> or a sweep directory."
        )
    rows = []
    for run_dir, *_ in run_dirs:
        for results in sorted(run_dir.glob("*/results.jsonl")):
            records = read_jsonl(results)
            if records:
                summary = arm_summary(results.parent, records)
                language = [{k: r[k] for k in LANGUAGE_FIELDS if k in r} for r in records]
                summary["phases"] = [{**extra, **phase} for extra, phase in zip(language, summary["phases"])]
                rows += _rows(summary, str(run_dir))
    return rows


def rows_from_hub(repo_id: str, revision: str = "main") -> list[dict[str, Any]]:
    """Rows of a pushed arm repo, read from its model card's ``warmstart_hf`` metadata."""
    from huggingface_hub import ModelCard, hf_hub_download

    card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision=revision))
    summary = card.data.to_dict().get("warmstart_hf")
    if not summary:
        raise ValueError(f"The card of {repo_id}@{revision} has no warmstart_hf metadata: not a warmstart-hf arm repo.")
    return _rows(summary, f"{HUB_SCHEME}{repo_id}@{revision}")


def collect_rows(sources: Iterable[str]) -> list[dict[str, Any]]:
    """Rows from run directories and ``hub://<user>/<repo>[@revision]`` arm repos, in order."""
    rows: list[dict[str, Any]] = []
    for source in sources:
        if source.startswith(HUB_SCHEME):
            repo, _, revision = source[len(HUB_SCHEME) :].partition("@")
            rows += rows_from_hub(repo, revision or "main")
        else:
            rows += rows_from_run_dir(source)
    return rows


def push_rows(rows: list[dict[str, Any]], repo_id: str, *, private: bool | None = None) -> str:
    """Push the rows as the ``train`` split of dataset repo ``repo_id``; returns the commit URL."""
    from datasets import Dataset, Features, Value

    features = Features({name: Value(dtype) for name, dtype in ROW_FIELDS.items()})
    return str(Dataset.from_list(rows, features=features).push_to_hub(repo_id, private=private))


def load_rows(repo_id: str, revision: str | None = None) -> list[dict[str, Any]]:
    """The rows of a results dataset pushed by :func:`push_rows`."""
    from datasets import load_dataset

    return load_dataset(repo_id, split="train", revision=revision).to_list()


def experiments(rows: list[dict[str, Any]]) -> list[RunInfo]:
    """The rows grouped into experiments (dataset, scenario, run, recipe hash), the standard scheme
    first; a phase seen twice (an arm read from its run dir and from its repo) counts once."""
    unique = {tuple(row[k] for k in (*GROUP_FIELDS, "strategy", "seed", "phase")): row for row in rows}
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in unique.values():
        groups[tuple(row[k] for k in GROUP_FIELDS)].append(row)
    names = [key[2] for key in groups]
    runs = []
    for (dataset, scenario, run, recipe), members in groups.items():
        arms: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for row in members:
            arms[(row["strategy"], row["seed"])].append(row)
        label = run if names.count(run) == 1 else f"{run} ({dataset}, {scenario}, recipe {str(recipe)[:8]})"
        info = RunInfo(label, Path(members[0]["source"]), scenario, max(r["num_phases"] for r in members))
        info.dataset, info.standard = dataset, any(r.get("standard") for r in members)
        info.arms = {key: sorted(records, key=lambda r: r["phase"]) for key, records in sorted(arms.items())}
        info.axes = {"run": run, "recipe_hash": recipe, "sources": ", ".join(sorted({r["source"] for r in members}))}
        runs.append(info)
    return sorted(runs, key=lambda r: (not r.standard, r.dataset, r.scenario, r.label))


def _lines(run: RunInfo, margin: float) -> list[dict[str, Any]]:
    """A line per strategy: the study's strategy line (finished arms) plus how far every arm got."""
    joined = {line["strategy"]: line for line in strategy_lines([run], margin)[run.label]}
    lines = []
    for strategy in sorted({s for s, _ in run.arms}):
        arms = [records for (name, _), records in run.arms.items() if name == strategy]
        complete = list(run.complete_arms(strategy).values())
        line = {"strategy": strategy, **joined.get(strategy, {}), "seeds": len(arms)}
        line["phases_done"] = min(len(records) for records in arms)
        train = [100 * records[-1]["train_accuracy"] for records in complete]
        line["final_train_mean"] = float(np.mean(train)) if train else None
        final_gap, average_gap = line.get("gap_final") or {}, line.get("gap_average") or {}
        line |= {
            "final_test_accuracy": line.get("final_mean"),
            "avg_incremental_test_accuracy": line.get("average_mean"),
            "final_train_accuracy": line["final_train_mean"],
            "gap_vs_cold_final": final_gap.get("mean"),
            "gap_vs_cold_avg": average_gap.get("mean"),
        }
        lines.append(line)
    return lines


def leaderboard(
    rows: list[dict[str, Any]], sort_by: str = "final_test_accuracy", margin: float = 1.0
) -> list[dict[str, Any]]:
    """One line per experiment x strategy (accuracies in %, gaps in points, intervals over seeds), the
    experiments one after another (standard scheme first), each ranked by ``sort_by``, missing last."""
    if sort_by not in SORT_METRICS:
        raise ValueError(f"Cannot sort by {sort_by!r}. Fix: use one of {', '.join(SORT_METRICS)}.")
    board = []
    for run in experiments(rows):
        facts = {"experiment": run.label, "dataset": run.dataset, "scenario": run.scenario, "standard": run.standard}
        if is_language(run):  # judged by held-out loss: lowest final perplexity first
            lines = [{**facts, **run.axes, **line} for line in _language_lines(run)]
            board += sorted(lines, key=lambda line: (line["final_perplexity"] is None, line["final_perplexity"] or 0))
            continue
        lines = [{**facts, **run.axes, **line} for line in _lines(run, margin)]
        board += sorted(lines, key=lambda line: (line[sort_by] is None, -(line[sort_by] or 0.0)))
    return board


def is_language(run: RunInfo) -> bool:
    """Whether ``run`` is a language-model experiment: held-out losses and no test accuracy."""
    records = [r for arm in run.arms.values() for r in arm]
    return all(r.get("test_accuracy") is None for r in records) and any(r.get("validation_loss") for r in records)


def _language_lines(run: RunInfo) -> list[dict[str, Any]]:
    """A line per strategy: seed means of the final and mean-over-phases perplexity and the tokens of
    finished arms, and the final held-out loss minus cold's, paired by seed (nats, 95% t-interval)."""
    lines = []
    for strategy in sorted({s for s, _ in run.arms}):
        arms = [records for (name, _), records in run.arms.items() if name == strategy]
        done = list(run.complete_arms(strategy).values())
        line = {"strategy": strategy, "seeds": len(arms), "phases_done": min(len(r) for r in arms)}
        line |= {
            "final_perplexity": float(np.mean([r[-1]["validation_perplexity"] for r in done])) if done else None,
            "mean_perplexity": float(np.mean([[p["validation_perplexity"] for p in r] for r in done]))
            if done
            else None,
            "tokens": round(np.mean([sum(p["train_tokens"] or 0 for p in r) for r in done])) if done else None,
        }
        lines.append(line | loss_gap_vs_cold(run.arms, strategy, run.num_phases))
    return lines


COLUMNS = [
    "strategy",
    "seeds",
    "phases_done",
    "final_test_accuracy",
    "avg_incremental_test_accuracy",
    "final_train_accuracy",
    "gap_vs_cold_final",
    "verdict_final",
    "gap_vs_cold_avg",
    "verdict_avg",
]
INTRO = (
    "One section per experiment (dataset, scenario, run, recipe). Accuracies in %: means over seeds with 95% "
    "t-intervals (clipped to [0, 100]) under them; gap vs cold: strategy minus cold paired by seed, in points, "
    "with its 95% interval; verdict: two one-sided tests at a margin of {margin:g} point(s). Missing values (-) "
    "sort last either way. Language models (held-out loss, no accuracy): perplexities are seed means, lowest final "
    "perplexity first; loss gap vs cold: final held-out loss minus cold's, paired by seed, in nats, with its 95% "
    "interval."
)


FACTS = {"dataset": "dataset", "scenario": "scenario", "run": "run", "recipe_hash": "recipe", "sources": "sources"}


def _sections(board: list[dict[str, Any]], sort_by: str, figures: dict[str, Figure] | None = None) -> list[Section]:
    """A section per experiment of ``board`` (in its order), with its figure where ``figures`` has one."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in board:
        grouped[line["experiment"]].append(line)
    sections = []
    for name, lines in grouped.items():
        first = lines[0]
        facts = [(title, str(first[k])) for k, title in FACTS.items() if k != "run" or first[k] != name]
        if "final_perplexity" in first:  # a language model: its own columns, lowest perplexity first
            table = dict_table(lines, LANGUAGE_COLUMNS, 3)
        else:
            table = strategy_table(lines, COLUMNS, (sort_by, "descending"))
        figure = [figures[name]] if figures and name in figures else []
        sections.append(Section(name, [table], figure, facts, bool(first["standard"])))
    return sections


def render_markdown(board: list[dict[str, Any]], sort_by: str = "final_test_accuracy") -> str:
    """The board as Markdown: a heading and a table per experiment."""
    return "\n".join(markdown_sections(_sections(board, sort_by)))


def _figures(runs: list[RunInfo], folder: Path) -> dict[str, Figure]:
    """Each experiment's train and test accuracy after each phase (the study's Fig. 1), in ``folder``."""
    figures = {}
    for index, run in enumerate(runs):
        if is_language(run):  # no accuracies to draw
            continue
        path = folder / f"experiment-{index:02d}.png"
        plot_fig1([run], path)
        caption = "Train and test accuracy after each phase: seed mean and 95% interval per strategy"
        figures[run.label] = Figure(path, caption)
    return figures


def render_html(
    board: list[dict[str, Any]], sort_by: str = "final_test_accuracy", runs: list | None = None, margin: float = 1.0
) -> str:
    """A self-contained page (``runs``' figures as data URIs): a section per experiment, tables sorted
    by ``sort_by``; any column sorts on click."""
    intro = [INTRO.format(margin=margin)]
    with tempfile.TemporaryDirectory() as folder:
        figures = _figures(runs, Path(folder)) if runs else None
        return render_page("warmstart-hf leaderboard", intro, _sections(board, sort_by, figures))


def build_leaderboard(
    sources: list[str],
    *,
    from_dataset: str | None = None,
    push_to: str | None = None,
    private: bool | None = None,
    sort_by: str = "final_test_accuracy",
    output_dir: str | Path = ".",
    margin: float = 1.0,
) -> dict[str, Any]:
    """Collect rows (sources, and/or an existing results dataset), optionally push them as a dataset,
    and write ``leaderboard.md`` and ``leaderboard.html``. What ``scripts/leaderboard.py`` runs."""
    rows = (load_rows(from_dataset) if from_dataset else []) + collect_rows(sources)
    if not rows:
        raise ValueError(
            "No results found. Fix: pass run or sweep directories, hub://<user>/<repo> arm repos or --from-dataset."
        )
    board = leaderboard(rows, sort_by, margin)
    url = push_rows(rows, push_to, private=private) if push_to else None
    output_dir = Path(output_dir)
    markdown = render_markdown(board, sort_by)
    intro = INTRO.format(margin=margin)
    atomic_write_text(output_dir / "leaderboard.md", f"# warmstart-hf leaderboard\n\n{intro}\n\n{markdown}")
    atomic_write_text(output_dir / "leaderboard.html", render_html(board, sort_by, experiments(rows), margin))
    return {"rows": rows, "board": board, "markdown": markdown, "pushed": url}
