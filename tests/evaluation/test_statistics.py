"""Statistics over seeds against scipy's, computed here from the same numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from gksparse.evaluation.statistics import Paired, Summary, holm, paired, summarize, verdict

A = [61.2, 64.0, 70.4, 66.1]
B = [58.0, 63.9, 62.5, 60.0]


def test_summary_is_the_mean_sample_std_and_students_t_interval():
    s = summarize(A)
    n = len(A)
    low, high = stats.t.interval(0.95, n - 1, loc=np.mean(A), scale=stats.sem(A))
    assert (s.mean, s.std, s.n) == (
        pytest.approx(np.mean(A)),
        pytest.approx(np.std(A, ddof=1)),
        n,
    )
    assert s.ci95 == (pytest.approx(low), pytest.approx(high))


def test_one_value_has_no_std_and_no_interval():
    assert summarize([0.5]) == summarize(np.array([0.5])) == Summary(0.5, None, 1, None)
    with pytest.raises(ValueError, match="at least one value"):
        summarize([])


def test_paired_comparison_is_the_paired_t_test():
    result = paired(A, B)
    test = stats.ttest_rel(A, B)
    ci = test.confidence_interval(0.95)
    assert result.n == len(A)
    assert result.difference == pytest.approx(np.mean(np.subtract(A, B)))
    assert result.p == pytest.approx(test.pvalue)
    assert result.ci95 == (pytest.approx(ci.low), pytest.approx(ci.high))
    flipped = paired(B, A)
    assert flipped.difference == pytest.approx(-result.difference) and flipped.p == result.p


def test_fewer_than_two_pairs_give_no_numbers():
    assert paired([70.0], [60.0]) == Paired(1)
    assert paired([], []) == Paired(0)
    assert verdict(Paired(1), None) == "fewer than 2 shared seeds"
    with pytest.raises(ValueError, match="as many values"):
        paired([1.0, 2.0], [1.0])


def test_identical_differences_are_exact_without_warnings():
    # 100 * (a - b) differs from 20 by float noise; scipy would warn of precision loss
    a, b = np.array([0.7, 0.8, 0.9]), np.array([0.5, 0.6, 0.7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shifted = paired(100 * a, 100 * b)
        same = paired(100 * a, 100 * a)
    assert shifted.difference == pytest.approx(20.0) and shifted.p == 0.0
    assert shifted.ci95 == (shifted.difference, shifted.difference)
    assert same == Paired(3, 0.0, (0.0, 0.0), 1.0)
    assert verdict(shifted, holm([shifted.p])[0]) == "better"
    assert verdict(same, 1.0) == "no difference detected with 3 seeds"


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # ascending: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04,
    # which the running maximum lifts to 0.06; back in the given order:
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.5 (x2) = 1.0, 0.6 (x1) = 0.6 -> 1.0: capped at 1 and monotone
    assert holm([0.6, 0.5]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_verdict_follows_holm_and_the_sign():
    up, down = Paired(3, 2.5, (1.0, 4.0), 0.01), Paired(3, -2.5, (-4.0, -1.0), 0.01)
    assert (verdict(up, 0.03), verdict(down, 0.03)) == ("better", "worse")
    assert verdict(up, 0.05) == "no difference detected with 3 seeds"
