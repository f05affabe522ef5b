"""Statistics of test accuracies over seeds: pure functions on floats (numpy, scipy.stats).

- `summarize`: mean, sample standard deviation, n and the 95% confidence interval of the mean
  (Student's t with n - 1 degrees of freedom; none with fewer than 2 values).
- `paired`: two rows' accuracies paired by seed: the mean difference a - b, its 95% confidence
  interval and the two-sided p of the paired t-test (scipy's `ttest_rel`, computed here from
  the same t distribution so that identical differences need no special warning).
- `holm`: Holm's step-down adjustment of a family of p values.
- `verdict`: what a comparison says in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95  # the confidence intervals'
ALPHA = 0.05  # a Holm-adjusted p below this is a difference
# Spreads below this are float noise of one number, not a spread: accuracies are k / N with
# N far below 1e9, so two real values differ by much more (in whatever unit they come in).
SAME = 1e-9


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (None for one value), n and the 95% CI of the mean (None for n < 2)."""

    mean: float
    std: float | None
    n: int
    ci95: tuple[float, float] | None


@dataclass(frozen=True)
class Paired:
    """A paired comparison over n shared seeds: the mean difference a - b, its 95% CI and
    the paired t-test's two-sided p; all None with fewer than 2 pairs."""

    n: int
    difference: float | None = None
    ci95: tuple[float, float] | None = None
    p: float | None = None


def _t() -> Any:
    """scipy's Student's t distribution, imported when first needed: scipy.stats takes about
    a second to import, and every run imports `gksparse.report` (for its table)."""
    from scipy.stats import t

    return t


def _half_width(std: float, n: int) -> float:
    """Half the 95% confidence interval of a mean of n values with sample std `std`."""
    return float(_t().ppf((1 + LEVEL) / 2, n - 1)) * std / math.sqrt(n)


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std (ddof 1), n and the Student's t 95% confidence interval of the mean
    of `values` (at least one); with one value no std and no interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("summarize needs at least one value.")
    mean = float(x.mean())
    if x.size < 2:
        return Summary(mean, None, 1, None)
    std = float(x.std(ddof=1))
    half = _half_width(std, x.size)
    return Summary(mean, std, int(x.size), (mean - half, mean + half))


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired comparison of `a` and `b` (equal lengths, pair i from one seed): the mean of the
    differences a - b, its Student's t 95% CI and the two-sided p of the paired t-test (as
    scipy.stats.ttest_rel); with fewer than 2 pairs only n."""
    if len(a) != len(b):
        raise ValueError(f"paired needs as many values in a as in b, not {len(a)} and {len(b)}.")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    if n < 2:
        return Paired(n)
    mean = float(d.mean())
    if float(np.ptp(d)) <= SAME:
        # Zero variance: every pair differs by the same amount, so the difference is exact,
        # the interval collapses to it and t is infinite (p = 0) or undefined (0 / 0: no
        # evidence of a difference, p = 1). Decided here, since the t statistic would divide
        # by a zero (or float-noise) std.
        if abs(mean) <= SAME:
            return Paired(n, 0.0, (0.0, 0.0), 1.0)
        return Paired(n, mean, (mean, mean), 0.0)
    std = float(d.std(ddof=1))
    t = mean / (std / math.sqrt(n))
    p = float(2 * _t().sf(abs(t), n - 1))
    half = _half_width(std, n)
    return Paired(n, mean, (mean - half, mean + half), p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the order given: the i-th smallest of m p values is
    multiplied by m - i (i from 0), made non-decreasing along that order and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(result: Paired, p_holm: float | None) -> str:
    """'better' or 'worse' (a than b) where the Holm-adjusted p is below ALPHA, else that no
    difference was detected with that many seeds, or that too few seeds pair to test."""
    if result.difference is None or p_holm is None:
        return "fewer than 2 shared seeds"
    if p_holm < ALPHA:
        return "better" if result.difference > 0 else "worse"
    return f"no difference detected with {result.n} seeds"
