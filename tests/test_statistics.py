from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from warmstart_hf.report.statistics import VERDICTS, summarize_gap, t_interval, tost_p_value


def test_t_interval_matches_the_textbook_formula():
    x = [0.4, -0.2, 0.9, 0.1, 0.3]
    mean, low, high = t_interval(x)
    n, m, s = len(x), float(np.mean(x)), float(np.std(x, ddof=1))
    half = 2.7764451051977987 * s / math.sqrt(n)  # t_{0.975, 4}
    assert mean == pytest.approx(m) and low == pytest.approx(m - half) and high == pytest.approx(m + half)
    assert t_interval([1.0]) == (1.0, None, None)


def test_tost_p_value_equals_the_larger_one_sided_t_test():
    x = [0.3, -0.4, 0.2, 0.5, -0.1, 0.0]
    lower = stats.ttest_1samp(x, -1.0, alternative="greater").pvalue
    upper = stats.ttest_1samp(x, 1.0, alternative="less").pvalue
    assert tost_p_value(x, 1.0) == pytest.approx(max(lower, upper))


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ([0.1, -0.2, 0.15, 0.05, -0.1, 0.0], "no loss (equivalent)"),  # tight around 0
        ([3.1, 2.8, 3.4, 3.0, 2.9], "warm better"),
        ([-2.5, -3.0, -2.2, -2.8], "warm worse"),
        ([2.0, -3.0, 4.0], "inconclusive (more seeds needed)"),  # wide interval
        ([0.1], "inconclusive (more seeds needed)"),  # one seed
        # inside the margin but the 95% interval excludes 0: a small, significant difference, not "no loss"
        ([0.6, 0.7, 0.65, 0.62, 0.68, 0.66], "equivalent within +-1 (warm better by a significant but small amount)"),
        (
            [-0.6, -0.7, -0.65, -0.62, -0.68, -0.66],
            "equivalent within +-1 (warm worse by a significant but small amount)",
        ),
    ],
)
def test_verdicts_on_constructed_gaps(gaps, verdict):
    summary = summarize_gap(gaps, margin=1.0)
    mean, low, high = t_interval(gaps)
    assert summary.verdict == verdict
    assert summary.verdict in [v.format(margin=1.0) for v in VERDICTS] and summary.n == len(gaps)
    if summary.verdict == "no loss (equivalent)":  # never said of a gap whose interval excludes 0
        assert low <= 0 <= high


def test_margin_changes_the_decision():
    gaps = [0.6, 0.7, 0.65, 0.62, 0.68, 0.66]
    assert summarize_gap(gaps, margin=0.5).verdict == "warm better"


def test_verdicts_name_the_compared_strategy():
    assert summarize_gap([3.1, 2.8, 3.4], name="dash").verdict == "dash better"
    assert summarize_gap([-3.1, -2.8, -3.4], name="dash").verdict == "dash worse"
    small = summarize_gap([-0.6, -0.7, -0.65, -0.62, -0.68, -0.66], margin=2.0, name="dash").verdict
    assert small == "equivalent within +-2 (dash worse by a significant but small amount)"


def test_every_strategy_but_cold_is_reported_against_warm_paired_by_seed():
    from pathlib import Path

    from warmstart_hf.report.study import RunInfo, warm_gap_rows

    accuracy = {("warm", 0): 0.90, ("warm", 1): 0.92, ("warm", 2): 0.91, ("cold", 0): 0.5, ("cold", 1): 0.5}
    accuracy |= {("cold", 2): 0.5, ("cbp", 0): 0.93, ("cbp", 1): 0.92, ("cbp", 2): 0.95}
    run = RunInfo("standard", Path("."), "data", 1)
    run.arms = {key: [{"phase": 0, "test_accuracy": value}] for key, value in accuracy.items()}
    rows = warm_gap_rows([run])
    assert {r["comparison"] for r in rows} == {"cbp - warm"}  # cold - warm is warm - cold's mirror: left out
    final = next(r for r in rows if r["metric"] == "final")
    assert final["n"] == 3
    assert final["mean"] == pytest.approx(100 * np.mean([0.03, 0.0, 0.04]))
