"""The leaderboard and the study report as pages, opened in a real browser (Debian's Chromium, driven
by Playwright): built from the committed CPU study (docs/results/cpu_study_digits/runs, real output of
`warmstart-sweep`), sorted by clicks on a column with missing values, every figure loaded, no console
error. With WARMSTART_SCREENSHOTS=1 the test also writes docs/leaderboard.png and docs/report.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CHROMIUM = Path(os.environ.get("WARMSTART_CHROMIUM", "/usr/bin/chromium"))
# The flags the machines' notes give for headless Chromium on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STUDY = Path("docs/results/cpu_study_digits/runs")  # relative: the pages show the path as given
STUDY_STRATEGIES = yaml.safe_load((REPO / "recipes/sweeps/cpu_study_digits.yaml").read_text())["strategies"]
SCREENSHOTS = os.environ.get("WARMSTART_SCREENSHOTS") == "1"
NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """The leaderboard and the report of the committed study, built into a temporary folder."""
    from warmstart_hf.report.leaderboard import build_leaderboard
    from warmstart_hf.report.study import write_study_report

    out = tmp_path_factory.mktemp("pages")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        build_leaderboard([str(STUDY)], output_dir=out / "board")
        report = write_study_report([STUDY], out / "report")
    return {"leaderboard": out / "board" / "leaderboard.html", "report": report / "report.html"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile; skipped, saying how to get one, where there is none."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        yield context
        context.close()


def _open(browser, path: Path):
    """The page at ``path`` and the list its console errors and uncaught exceptions go to."""
    assert path.is_file(), f"{path} was not written"
    page, errors = browser.new_page(), []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors


def _column(table, title: str) -> tuple[object, int]:
    """The header cell whose text starts with ``title``, and its index."""
    headers = table.locator("thead th")
    texts = [t.strip() for t in headers.all_inner_texts()]
    index = next((i for i, t in enumerate(texts) if t.startswith(title)), None)
    assert index is not None, f"no column {title!r} in {texts}"
    return headers.nth(index), index


def _values(table, index: int) -> list[float | None]:
    """The numbers column ``index`` shows, top to bottom (the first line of a cell; "-" is None)."""
    cells = table.locator(f"tbody tr > :nth-child({index + 1})").all_inner_texts()
    shown = [cell.strip().splitlines()[0].strip() if cell.strip() else "-" for cell in cells]
    assert all(s == "-" or NUMBER.match(s) for s in shown), shown
    return [None if s == "-" else float(s) for s in shown]


def _check_sort(page, table, title: str) -> None:
    """Click ``title`` twice: numbers in order each time, missing values last either way, and the
    order stated by aria-sort, the header arrow and the caption."""
    header, index = _column(table, title)
    assert None in _values(table, index), f"{title!r} has no missing value to sort"
    for direction in ("descending", "ascending"):
        header.click()
        values = _values(table, index)
        present = [v for v in values if v is not None]
        assert values == present + [None] * (len(values) - len(present)), f"{direction}: missing not last: {values}"
        assert present == sorted(present, reverse=direction == "descending"), f"{direction}: {values}"
        assert header.get_attribute("aria-sort") == direction
        arrow = header.locator("button").evaluate("button => getComputedStyle(button, '::after').content")
        assert ("\u25bc" if direction == "descending" else "\u25b2") in arrow
        caption = table.locator("caption").inner_text()
        assert title in caption and direction in caption, caption


def _check_page(page, errors: list[str], figures: int) -> None:
    """Every image loaded, numbers right-aligned and never "-0.00", no console error."""
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(images) >= figures and all(width > 0 for width in images), images
    text = page.locator("body").inner_text()
    assert "-0.00" not in text and "100.8" not in text
    aligned = page.eval_on_selector_all(
        "td", "cells => cells.filter(c => /^[+-]?[0-9]/.test(c.innerText)).map(c => getComputedStyle(c).textAlign)"
    )
    assert aligned and set(aligned) == {"right"}, set(aligned)
    assert errors == []


def _screenshot(page, name: str) -> None:
    """docs/<name>, the whole page, where WARMSTART_SCREENSHOTS=1 asks for it."""
    if SCREENSHOTS:
        page.screenshot(path=str(REPO / "docs" / name), full_page=True)


@pytest.mark.slow
def test_leaderboard_page_sorts_with_missing_values_last(browser, pages):
    page, errors = _open(browser, pages["leaderboard"])
    _screenshot(page, "leaderboard.png")  # as it opens, before the clicks
    sections = page.locator("section")
    assert sections.count() == 4  # one per configuration of the study, not one list
    assert page.locator("section.standard").count() == 1
    assert "augmentation=standard" in page.locator("section").first.locator("h2").inner_text()
    assert "standard scheme" in page.locator("section").first.inner_text()
    for index in range(sections.count()):
        section = sections.nth(index)
        assert section.locator("img").count() == 1  # the experiment's figure beside its table
        strategies = section.locator("tbody tr > :first-child").all_inner_texts()
        assert sorted(strategies) == sorted(STUDY_STRATEGIES)
    table = sections.first.locator("table")
    assert "Sorted by final test acc" in table.locator("caption").inner_text()
    _check_sort(page, table, "gap vs cold, final")
    _check_page(page, errors, figures=4)


@pytest.mark.slow
def test_report_page_and_markdown_embed_their_figures(browser, pages):
    report = pages["report"]
    markdown = (report.parent / "report.md").read_text()
    for figure in sorted(report.parent.glob("*.png")):
        assert f"]({figure.name})" in markdown, f"report.md does not embed {figure.name}"
    assert "| 336 |" in markdown and "336.00" not in markdown  # steps are counts
    upper = [float(x) for x in re.findall(r"\[[\d.]+, ([\d.]+)\]", markdown)]
    assert upper and max(upper) <= 100.0  # accuracy intervals clipped to [0, 100]

    page, errors = _open(browser, report)
    _screenshot(page, "report.png")
    table = page.locator("section.standard table")
    assert page.locator("section.standard").count() == 1 and table.count() == 1
    assert "configuration" not in table.locator("thead").inner_text()  # said once, in the heading
    _check_sort(page, table, "steps to reach cold")
    _check_sort(page, page.locator("section table").nth(2), "gap vs cold, avg")
    _check_page(page, errors, figures=5)


def test_numbers_keep_their_decimals_and_never_print_minus_zero():
    from warmstart_hf.report.pages import fmt, interval

    assert [fmt(-0.001), fmt(-0.004, signed=True), fmt(0.004, signed=True), fmt(336.0, 0), fmt(None)] == [
        "0.00",
        "0.00",
        "0.00",
        "336",
        "-",
    ]
    assert (fmt(-0.006, signed=True), fmt(1.5, signed=True), fmt(float("nan"))) == ("-0.01", "+1.50", "-")
    cell = interval(-0.004, -0.66, 0.66, signed=True)
    assert (cell.text, cell.detail, cell.full) == ("0.00", "[-0.66, +0.66]", "0.00 [-0.66, +0.66]")


def test_accuracy_intervals_stay_within_0_and_100():
    from warmstart_hf.report.statistics import accuracy_interval, t_interval

    values = [100.0, 96.7, 98.9]  # cold's final accuracies in one configuration of the CPU study
    assert t_interval(values)[2] > 100
    mean, low, high = accuracy_interval(values)
    assert high == 100.0 and low == t_interval(values)[1] and mean == pytest.approx(98.5333, abs=1e-4)
    assert accuracy_interval([1.0, 0.0, 0.5])[1] == 0.0 and accuracy_interval([97.0])[1:] == (None, None)


def test_tables_sort_missing_values_last_in_both_directions():
    from warmstart_hf.report.pages import Column, Table, number

    rows = [{"gap": number(v)} for v in (-0.15, None, 0.96, -0.74, None, 0.0)]
    table = Table([Column("gap", "gap")], rows)
    down, up = table.sorted("gap"), table.sorted("gap", "ascending")
    assert [r["gap"].value for r in down.rows] == [0.96, 0.0, -0.15, -0.74, None, None]
    assert [r["gap"].value for r in up.rows] == [-0.74, -0.15, 0.0, 0.96, None, None]
    assert up.sort_label() == "Sorted by gap, ascending."


def test_the_leaderboard_reads_a_sweep_directory_as_the_report_does(tmp_path):
    from warmstart_hf.report.leaderboard import collect_rows, leaderboard
    from warmstart_hf.report.study import discover_runs

    sweep = REPO / STUDY
    rows = collect_rows([str(sweep)])
    runs = discover_runs([sweep])
    assert {row["run"] for row in rows} == {run.label for run in runs} and len(runs) == 4
    assert len(rows) == sum(len(records) for run in runs for records in run.arms.values())
    standard = {row["run"] for row in rows if row["standard"]}
    assert standard == {run.label for run in runs if run.standard} == {"protocol=3chunks,augmentation=standard"}
    board = leaderboard(rows, "gap_vs_cold_final")
    experiments = [line["experiment"] for line in board]
    assert experiments == sorted(experiments, key=experiments.index)  # grouped: each experiment's lines together
    assert experiments[0] == "protocol=3chunks,augmentation=standard" and len(set(experiments)) == 4
    first = board[: len(STUDY_STRATEGIES)]
    assert [line["strategy"] for line in first][-1] == "cold"  # no gap to itself: last
    assert first[0]["gap_final"]["verdict"] == "dash better" and first[0]["final_ci_high"] <= 100
    with pytest.raises(ValueError, match="neither a run directory"):
        collect_rows([str(tmp_path)])  # no run below
