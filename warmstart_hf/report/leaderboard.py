"""The project's self-hosted leaderboard: a results dataset on the Hub plus markdown/HTML tables.

The Hub builds leaderboards only for registered benchmark datasets (https://huggingface.co/docs/hub/eval-results),
not from a card's ``model-index``, so results are collected here: one row
per arm x phase (dataset, scenario, strategy, seed, phase, metrics, recipe hash, code version) from
run directories or from the cards of pushed arm repos (their ``warmstart_hf`` metadata), pushed as a
``datasets`` dataset, and turned into a table of final and average-incremental test accuracy with
the warm-minus-cold gap (paired by seed within one experiment, the run summary's rule).
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from warmstart_hf.io import atomic_write_text, read_jsonl
from warmstart_hf.report.summary import _fmt, summary_rows

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
    "recipe_hash": "string",
    "code_version": "string",
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


def _rows(summary: dict[str, Any], source: str) -> list[dict[str, Any]]:
    base = {k: v for k, v in summary.items() if k != "phases"}
    return [{name: {"source": source, **base, **phase}.get(name) for name in ROW_FIELDS} for phase in summary["phases"]]


def rows_from_run_dir(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every arm of a local run directory."""
    from warmstart_hf.hub import arm_summary

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run directory (no config.yaml). Fix: pass runs/<run_name>.")
    rows = []
    for results in sorted(run_dir.glob("*/results.jsonl")):
        records = read_jsonl(results)
        if records:
            rows += _rows(arm_summary(results.parent, records), str(run_dir))
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


def leaderboard(rows: list[dict[str, Any]], sort_by: str = "final_test_accuracy") -> list[dict[str, Any]]:
    """One line per experiment x strategy (means over seeds, gap vs cold paired by seed), best first.
    An experiment is a (dataset, scenario, run, recipe hash); a phase seen twice counts once."""
    if sort_by not in SORT_METRICS:
        raise ValueError(f"Cannot sort by {sort_by!r}. Fix: use one of {', '.join(SORT_METRICS)}.")
    unique = {tuple(row[k] for k in (*GROUP_FIELDS, "strategy", "seed", "phase")): row for row in rows}
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in unique.values():  # an arm read from its run dir and from its repo counts once
        groups[tuple(row[k] for k in GROUP_FIELDS)][f"{row['strategy']}-seed{row['seed']}"].append(row)
    board = []
    for key, arms in groups.items():
        arms = {name: sorted(records, key=lambda r: r["phase"]) for name, records in arms.items()}
        board += [{**dict(zip(GROUP_FIELDS, key)), **line} for line in summary_rows(arms)]
    return sorted(board, key=lambda line: (line[sort_by] is None, -(line[sort_by] or 0.0)))


COLUMNS = (
    ("dataset", "dataset", False),
    ("scenario", "scenario", False),
    ("strategy", "strategy", False),
    ("seeds", "seeds", False),
    ("phases_done", "phases", False),
    ("final_test_accuracy", "final test acc (%)", False),
    ("avg_incremental_test_accuracy", "avg incremental test acc (%)", False),
    ("gap_vs_cold_final", "gap vs cold, final (pts)", True),
    ("gap_vs_cold_avg", "gap vs cold, avg (pts)", True),
    ("run", "run", False),
    ("recipe_hash", "recipe", False),
)


def _cells(line: dict[str, Any]) -> list[str]:
    return [_fmt(line[key], signed=signed) for key, _, signed in COLUMNS]


def render_markdown(board: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return header + "".join("| " + " | ".join(_cells(line)) + " |\n" for line in board)


_SORT_SCRIPT = """<script>
document.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
  const key = r => { const v = parseFloat(r.cells[col].textContent); return isNaN(v) ? r.cells[col].textContent : v; };
  const down = th.dataset.order !== "desc"; th.dataset.order = down ? "desc" : "asc";
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (down ? -1 : 1));
  rows.forEach(r => body.appendChild(r));
}));
</script>"""


def render_html(board: list[dict[str, Any]], sort_by: str = "final_test_accuracy") -> str:
    """A standalone page; rows come sorted by ``sort_by`` and any column sorts on click."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(line)) + "</tr>\n" for line in board)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>warmstart-hf leaderboard</title></head><body>\n'
        f"<h1>warmstart-hf leaderboard</h1>\n<p>Sorted by {html.escape(sort_by)}; click a column to sort.</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n{_SORT_SCRIPT}\n</body></html>\n"
    )


def build_leaderboard(
    sources: list[str],
    *,
    from_dataset: str | None = None,
    push_to: str | None = None,
    private: bool | None = None,
    sort_by: str = "final_test_accuracy",
    output_dir: str | Path = ".",
) -> dict[str, Any]:
    """Collect rows (sources, and/or an existing results dataset), optionally push them as a dataset,
    and write ``leaderboard.md`` and ``leaderboard.html``. What ``scripts/leaderboard.py`` runs."""
    rows = (load_rows(from_dataset) if from_dataset else []) + collect_rows(sources)
    if not rows:
        raise ValueError(
            "No results found. Fix: pass run directories, hub://<user>/<repo> arm repos or --from-dataset."
        )
    board = leaderboard(rows, sort_by)
    url = push_rows(rows, push_to, private=private) if push_to else None
    output_dir = Path(output_dir)
    markdown = render_markdown(board)
    atomic_write_text(output_dir / "leaderboard.md", f"# warmstart-hf leaderboard (sorted by {sort_by})\n\n{markdown}")
    atomic_write_text(output_dir / "leaderboard.html", render_html(board, sort_by))
    return {"rows": rows, "board": board, "markdown": markdown, "pushed": url}
