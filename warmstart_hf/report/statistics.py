"""Paired statistics of a strategy-minus-cold gap across seeds.

The gap of each seed is paired (same split, initial weights and data order in both arms). For its
mean we give a t-interval, and an equivalence verdict by two one-sided tests (TOST): the gap is
"equivalent" to zero when both H0: gap <= -margin and H0: gap >= +margin are rejected at ``alpha``
(equivalently, the 1 - 2 alpha interval lies inside (-margin, +margin)). An equivalent gap whose 95%
interval still excludes 0 is reported as a small but significant difference, never as "no loss".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

VERDICTS = (
    "no loss (equivalent)",
    "warm better",
    "warm worse",
    "inconclusive (more seeds needed)",
    "equivalent within +-{margin:g} (warm better by a significant but small amount)",
    "equivalent within +-{margin:g} (warm worse by a significant but small amount)",
)


@dataclass
class GapSummary:
    n: int
    mean: float
    ci_low: float | None
    ci_high: float | None
    tost_p: float | None
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean and two-sided t-interval (None bounds with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, None
    half = stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - float(half), mean + float(half)


def accuracy_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """:func:`t_interval` of accuracies in %, its bounds clipped to [0, 100]: a t-interval is symmetric
    and can pass 100% (98.5 +- 2.3), which no accuracy can."""
    mean, low, high = t_interval(values, confidence)
    return mean, None if low is None else max(low, 0.0), None if high is None else min(high, 100.0)


def tost_p_value(values: list[float], margin: float) -> float | None:
    """p-value of the two one-sided tests for equivalence within +-margin (the larger of the two)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    se = x.std(ddof=1) / math.sqrt(len(x))
    if se == 0:
        return 0.0 if abs(x.mean()) < margin else 1.0
    df = len(x) - 1
    p_lower = stats.t.sf((x.mean() + margin) / se, df)  # H0: mean <= -margin
    p_upper = stats.t.cdf((x.mean() - margin) / se, df)  # H0: mean >= +margin
    return float(max(p_lower, p_upper))


def summarize_gap(values: list[float], margin: float = 1.0, alpha: float = 0.05, name: str = "warm") -> GapSummary:
    """Gap statistics (in the units of ``values``, e.g. accuracy points) and the verdict.

    Equivalent within the margin (TOST) and a (1 - alpha) t-interval that contains 0 -> "no loss
    (equivalent)"; equivalent but the interval excludes 0 -> "equivalent within +-margin (warm better |
    worse by a significant but small amount)", so a real, small loss is never read as "no loss"; not
    equivalent, interval entirely above 0 -> "warm better", below 0 -> "warm worse"; else
    "inconclusive (more seeds needed)". ``name`` replaces "warm" for other strategies. One seed is
    always inconclusive.
    """
    mean, low, high = t_interval(values, 1 - alpha)
    p = tost_p_value(values, margin)
    equivalent = p is not None and p < alpha
    above, below = low is not None and low > 0, high is not None and high < 0
    if equivalent:
        verdict = VERDICTS[4] if above else VERDICTS[5] if below else VERDICTS[0]
    else:
        verdict = VERDICTS[1] if above else VERDICTS[2] if below else VERDICTS[3]
    return GapSummary(len(values), mean, low, high, p, verdict.format(margin=margin).replace("warm", name))
