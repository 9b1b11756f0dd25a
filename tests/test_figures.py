"""What the figures show, read back from the matplotlib Figure each plot function returns (records
written here, no training): phases are named 0-based as in the records, run directories and Hub
branches; a fraction's axis does not go below 0; intervals do not run past 100%; the legend covers
no data and no title collides; Fig. 2 names only the markers it draws; Fig. 4 marks and names the
phases and the aligned pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from tests.test_alignment import _pretraining_run
from warmstart_hf.report.alignment import write_alignment
from warmstart_hf.report.pretraining import plot_fig4
from warmstart_hf.report.study import RunInfo, plot_fig1, plot_fig2
from warmstart_hf.report.style import STRATEGY_COLORS, phase_label
from warmstart_hf.report.summary import load_run_results, plot_accuracy_per_phase

COLOUR_WORDS = ("red", "blue", "orange", "green", "purple", "grey", "gray", "black")


def _arm(strategy: str, seed: int, phases: int = 3, dormant: float | None = None) -> list[dict]:
    """Phase records as the loop writes them; accuracies near 100% so a t-interval would pass it."""
    rng = np.random.default_rng(seed)
    records = []
    for phase in range(phases):
        record = {"strategy": strategy, "seed": seed, "phase": phase, "steps": 10, "train_seconds": 1.0}
        record["train_accuracy"] = min(1.0, 0.97 + 0.01 * phase + 0.01 * rng.random())
        record["test_accuracy"] = min(1.0, 0.90 + 0.03 * phase + 0.02 * rng.random())
        if dormant is not None:
            record["diagnostics"] = {"dormant_fraction": dormant, "effective_rank": 3.0 + phase}
        records.append(record)
    return records


def _boxes(fig) -> dict:
    """Window extents of the axes, their titles, the suptitle and the figure legends (after a draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # a closed figure has lost its canvas
    fig.draw(renderer)
    return {
        "axes": [ax.get_window_extent(renderer) for ax in fig.axes],
        "titles": [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()],
        "suptitle": fig._suptitle.get_window_extent(renderer) if fig._suptitle else None,
        "legends": [legend.get_window_extent(renderer) for legend in fig.legends],
    }


def test_fig1_names_phases_from_0_keeps_intervals_within_100_and_its_legend_and_titles_clear(tmp_path):
    run = RunInfo("protocol=3chunks,augmentation=standard", tmp_path, "data", 3)
    for strategy in ("cold", "warm", "dash"):
        for seed in range(3):
            run.arms[(strategy, seed)] = _arm(strategy, seed)
    fig = plot_fig1([run], tmp_path / "fig1.png")
    assert (tmp_path / "fig1.png").stat().st_size > 0
    recorded = [str(r["phase"]) for r in run.arms[("cold", 0)]]
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == recorded == ["0", "1", "2"]
        assert "0 = first" in ax.get_xlabel()
        for collection in ax.collections:  # the whiskers
            for segment in collection.get_segments():
                assert segment[:, 1].max() <= 100.0 + 1e-9
        colours = {container.get_label(): container.lines[0].get_color() for container in ax.containers}
        assert colours == {f"{s} (n=3)": STRATEGY_COLORS[s] for s in ("cold", "warm", "dash")}  # one each
    boxes = _boxes(fig)
    assert len(boxes["legends"]) == 1 and all(not ax.get_legend() for ax in fig.axes)
    for legend in boxes["legends"]:
        assert not any(legend.overlaps(ax) for ax in boxes["axes"])
    assert not any(boxes["suptitle"].overlaps(title) for title in boxes["titles"])
    assert not any(boxes["suptitle"].overlaps(ax) for ax in boxes["axes"])


def test_the_run_summary_keeps_fractions_at_or_above_0_and_names_phases_from_0(tmp_path):
    # no dormant units at all: autoscaling alone would centre the axis on 0 and show negative fractions
    for strategy in ("warm", "cold"):
        for records in [_arm(strategy, seed, phases=4, dormant=0.0) for seed in (0, 1)]:
            directory = tmp_path / f"{strategy}-seed{records[0]['seed']}"
            directory.mkdir()
            (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    fig = plot_accuracy_per_phase(load_run_results(tmp_path), tmp_path / "fig1.png")
    panels = {ax.get_ylabel(): ax for ax in fig.axes}
    assert panels["dormant units (%)"].get_ylim()[0] >= 0
    assert panels["effective rank of features"].get_ylim()[0] >= 0
    assert panels["train accuracy (%)"].get_ylim()[1] <= 100.5
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    boxes = _boxes(fig)
    assert not any(legend.overlaps(ax) for legend in boxes["legends"] for ax in boxes["axes"])


def _gap(configuration: str, mean: float, standard: bool) -> dict:
    return {
        "configuration": configuration,
        "scenario": "data",
        "standard": standard,
        "comparison": "warm - cold",
        "metric": "final",
        "mean": mean,
        "ci_low": mean - 1,
        "ci_high": mean + 1,
    }


@pytest.mark.parametrize("with_standard", [False, True])
def test_fig2_names_only_the_markers_it_draws(tmp_path, with_standard):
    rows = [_gap("a", 0.5, with_standard), _gap("b", -0.2, False)]
    fig = plot_fig2(rows, tmp_path / "fig2.png")
    ax = fig.axes[0]
    texts = [ax.get_title(), *(t.get_text() for legend in fig.legends for t in legend.get_texts())]
    assert not any(word in text.lower() for text in texts for word in COLOUR_WORDS)  # no colour is named
    markers = {container.lines[0].get_marker() for container in ax.containers}
    legend_text = " ".join(texts[1:])
    assert ("standard scheme" in legend_text) == with_standard == ("D" in markers)
    assert len(fig.legends) == with_standard  # one kind of marker: nothing for a legend to tell apart
    bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == (["a (data)"] if with_standard else [])


def test_fig4_marks_and_names_the_phases_and_joins_each_target_to_its_chosen_checkpoint(tmp_path):
    run = _pretraining_run(tmp_path, (0.5, 0.2))  # nothing of warm reaches 0.2: phase 1 flagged
    alignment = json.loads(write_alignment(run, "warm_to_cold", tolerance=0.015).read_text())
    fig = plot_fig4(load_run_results(run), alignment, tmp_path / "fig4.png")
    left, right = fig.axes
    boundaries = [line.get_xdata()[0] for line in left.lines if line.get_linestyle() == "--"]
    assert boundaries == [6]  # phase 1 starts after phase 0's 6 steps
    assert {t.get_text() for t in left.texts} == {"phase 0", "phase 1"}
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "target: cold end of phase" in labels and "chosen warm checkpoint" in labels
    assert any(label.startswith("flagged") for label in labels)
    targets = [line for line in left.lines if line.get_marker() == "s"]
    assert sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in targets) == [(6, 0.5), (12, 0.2)]
    assert [t.get_text() for t in right.get_xticklabels()] == ["0", "1"]
    bar_colours = {tuple(patch.get_facecolor()) for patch in right.patches}
    assert not bar_colours & {to_rgba(STRATEGY_COLORS[s]) for s in ("warm", "cold")}  # no arm's colour


def test_progress_bars_name_the_phase_as_directories_and_branches_do():
    assert phase_label(0, 5) == "phase 0 (1/5)"
    assert phase_label(4, 5) == "phase 4 (5/5)"


def test_every_registered_strategy_has_its_own_colour():
    from warmstart_hf.strategies import STRATEGIES

    assert set(STRATEGIES) <= set(STRATEGY_COLORS), "a strategy without a colour is drawn grey, like another"
    assert len(set(STRATEGY_COLORS.values())) == len(STRATEGY_COLORS)
