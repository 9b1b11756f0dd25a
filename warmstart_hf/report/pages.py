"""Shareable pages of results: tables of cells (text shown, value sorted on) grouped into one section
per experiment, rendered as Markdown and as a self-contained HTML page (inline CSS and JS, figures as
data URIs) from the jinja2 templates in ``templates/``. Used by the leaderboard and the study report.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING = "-"


def fmt(value: float | int | None, decimals: int = 2, signed: bool = False) -> str:
    """A number with fixed decimals; ``signed`` adds "+" to positives. Whatever rounds to zero prints as
    an unsigned zero, never "-0.00"; None (and NaN) prints as :data:`MISSING`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    text = f"{value:{'+' if signed else ''}.{decimals}f}"
    return f"{0:.{decimals}f}" if float(text) == 0 else text


@dataclass
class Cell:
    """What a table cell shows, and what it sorts on (None: missing, sorted last either way)."""

    text: str
    value: float | str | None = None
    tone: str = ""  # a CSS class: better, worse, equivalent, inconclusive
    title: str = ""
    detail: str = ""  # an interval, shown under the value on the page

    @property
    def full(self) -> str:
        return f"{self.text} {self.detail}" if self.detail else self.text

    @property
    def missing(self) -> bool:
        return self.value is None


def number(value: float | int | None, decimals: int = 2, signed: bool = False) -> Cell:
    return Cell(fmt(value, decimals, signed), value)


def interval(mean: float | None, low: float | None, high: float | None, signed: bool = False) -> Cell:
    """The mean, with its interval as the detail (none with one seed)."""
    detail = "" if low is None or high is None else f"[{fmt(low, signed=signed)}, {fmt(high, signed=signed)}]"
    return Cell(fmt(mean, signed=signed), mean, detail=detail)


def text(value: Any) -> Cell:
    return Cell(MISSING, None) if value is None or value == "" else Cell(str(value), str(value))


def verdict(value: str | None, p: float | None = None) -> Cell:
    """The equivalence verdict, toned by its direction (the TOST p-value as the tooltip)."""
    if not value:
        return text(None)
    tone = (
        "equivalent"
        if value.startswith(("no loss", "equivalent"))
        else "better"
        if value.endswith("better")
        else "worse"
        if value.endswith("worse")
        else "inconclusive"
    )
    return Cell(value, value, "verdict " + tone, "" if p is None else f"TOST p = {fmt(p, 3)}")


@dataclass
class Column:
    key: str
    title: str
    numeric: bool = True


@dataclass
class Table:
    """One sortable table; ``sort`` is the (column key, "descending" | "ascending") the rows come in."""

    columns: list[Column]
    rows: list[dict[str, Cell]]
    title: str = ""
    sort: tuple[str, str] | None = None

    def sorted(self, key: str, direction: str = "descending") -> Table:
        """The rows ordered by column ``key``, missing values last in either direction (as the page's script)."""
        present = [r for r in self.rows if not r[key].missing]
        missing = [r for r in self.rows if r[key].missing]
        present.sort(key=lambda r: r[key].value, reverse=direction == "descending")
        return Table(self.columns, present + missing, self.title, (key, direction))

    def sort_label(self) -> str:
        if not self.sort:
            return "Click a column header to sort."
        title = next(c.title for c in self.columns if c.key == self.sort[0])
        return f"Sorted by {title}, {self.sort[1]}."


@dataclass
class Figure:
    path: Path
    caption: str

    def src(self, embed: bool) -> str:
        """A data URI (the page stands alone) or the file name (the page lies beside its figures)."""
        if not embed:
            return self.path.name
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Section:
    """One experiment: a heading, facts about it, its tables and its figures (shown beside the tables)."""

    title: str
    tables: list[Table]
    figures: list[Figure] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    standard: bool = False
    notes: list[str] = field(default_factory=list)


def markdown_table(table: Table) -> str:
    """The table as a Markdown table, numbers right-aligned."""
    head = "| " + " | ".join(c.title for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|"
    body = ["| " + " | ".join(row[c.key].full.replace("|", "\\|") for c in table.columns) + " |" for row in table.rows]
    return "\n".join([head, rule, *body]) + "\n"


def markdown_sections(sections: list[Section], level: int = 2) -> list[str]:
    """Every section as Markdown: heading, facts, figures embedded (``![caption](file)``), tables."""
    lines = []
    for section in sections:
        lines.append(f"{'#' * level} {section.title}{' (standard scheme)' if section.standard else ''}\n")
        if section.facts:
            lines.append("; ".join(f"{k}: {v}" for k, v in section.facts) + "\n")
        lines += [f"{note}\n" for note in section.notes]
        lines += [f"![{figure.caption}]({figure.path.name})\n" for figure in section.figures]
        for table in section.tables:
            lines += [f"**{table.title}**\n"] if table.title else []
            lines.append(markdown_table(table))
    return lines


def render_html(title: str, intro: list[str], sections: list[Section], embed: bool = True) -> str:
    """The self-contained page (templates/page.html.j2)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("warmstart_hf.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("page.html.j2").render(title=title, intro=intro, sections=sections, embed=embed)


def _gap(line: dict[str, Any], metric: str) -> Cell:
    gap = line.get(f"gap_{metric}")
    return text(None) if gap is None else interval(gap["mean"], gap["ci_low"], gap["ci_high"], signed=True)


def _verdict(line: dict[str, Any], metric: str) -> Cell:
    gap = line.get(f"gap_{metric}")
    return text(None) if gap is None else verdict(gap["verdict"], gap["tost_p"])


def _fraction(value: str | None) -> Cell:
    """``"5/6"`` phases, sorted by the share."""
    if not value:
        return text(None)
    hits, total = (int(x) for x in value.split("/"))
    return Cell(value, hits / total if total else None)


# key: (title, numeric, cell of a strategy line from study.strategy_lines)
STRATEGY_COLUMNS: dict[str, tuple[str, bool, Any]] = {
    "strategy": ("strategy", False, lambda r: text(r["strategy"])),
    "optimizer_state": ("optimizer state", False, lambda r: text(r.get("optimizer_state"))),
    "seeds": ("seeds", True, lambda r: number(r.get("seeds"), 0)),
    "phases_done": ("phases", True, lambda r: number(r.get("phases_done"), 0)),
    "final_test_accuracy": (
        "final test acc (%) [95% CI]",
        True,
        lambda r: interval(r.get("final_mean"), r.get("final_ci_low"), r.get("final_ci_high")),
    ),
    "avg_incremental_test_accuracy": (
        "avg incremental test acc (%) [95% CI]",
        True,
        lambda r: interval(r.get("average_mean"), r.get("average_ci_low"), r.get("average_ci_high")),
    ),
    "final_train_accuracy": ("final train acc (%)", True, lambda r: number(r.get("final_train_mean"))),
    "gap_vs_cold_final": ("gap vs cold, final (pts) [95% CI]", True, lambda r: _gap(r, "final")),
    "verdict_final": ("verdict, final", False, lambda r: _verdict(r, "final")),
    "gap_vs_cold_avg": ("gap vs cold, avg (pts) [95% CI]", True, lambda r: _gap(r, "average")),
    "verdict_avg": ("verdict, avg", False, lambda r: _verdict(r, "average")),
    "steps": ("steps", True, lambda r: number(r.get("steps"), 0)),
    "train_seconds": ("train time (s)", True, lambda r: number(r.get("train_seconds"), 1)),
    "steps_to_reach_cold": ("steps to reach cold", True, lambda r: number(r.get("steps_to_reach_cold"), 0)),
    "phases_reaching_cold": ("phases reaching cold", True, lambda r: _fraction(r.get("phases_reaching_cold"))),
}


def strategy_table(
    lines: list[dict[str, Any]], keys: list[str], sort: tuple[str, str] | None = None, title: str = ""
) -> Table:
    """A table of strategy lines (study.strategy_lines) with the columns ``keys``, sorted by ``sort``."""
    columns = [Column(key, STRATEGY_COLUMNS[key][0], STRATEGY_COLUMNS[key][1]) for key in keys]
    rows = [{key: STRATEGY_COLUMNS[key][2](line) for key in keys} for line in lines]
    table = Table(columns, rows, title)
    return table.sorted(*sort) if sort else table


def dict_table(rows: list[dict[str, Any]], columns: list[str], decimals: int = 2) -> Table:
    """A table of plain rows (CSV-like dicts): floats with ``decimals`` decimals, integers as such, a
    ``verdict`` column toned, the rest as text."""

    def cell(column: str, value: Any) -> Cell:
        if column == "verdict":
            return verdict(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return text(value)
        return number(value, decimals if isinstance(value, float) else 0)

    numeric = [all(isinstance(r.get(c), (int, float, type(None))) for r in rows) for c in columns]
    cells = [{c: cell(c, r.get(c)) for c in columns} for r in rows]
    return Table([Column(c, c.replace("_", " "), n) for c, n in zip(columns, numeric)], cells)
