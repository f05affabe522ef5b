"""Subsets and labeled splits against their definitions in METHOD.md section 6."""

from __future__ import annotations

import numpy as np
import pytest

from gksparse.data import coil_split, random_split, subset_index


def test_coil_split_for_four_frames_is_the_documented_one():
    train, val, test = coil_split(4)
    assert train == [0, 16, 32, 48]
    assert val == [8, 24, 40, 56]
    assert test == [f for f in range(72) if f not in (0, 8, 16, 24, 32, 40, 48, 56)]


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_coil_split_follows_the_definition(n):
    s = 64 // n
    train, val, test = coil_split(n)
    assert train == list(range(0, 64, s))  # 0, s, 2s, ... below 64: n of them
    assert len(train) == n
    assert val == [v for v in range(s // 2, 64, s) if v not in train]
    assert test == sorted(set(range(72)) - set(train) - set(val))
    assert len(val) == n and len(test) == 72 - 2 * n


def test_coil_split_rejects_impossible_sizes():
    for n in (0, 33, 64):
        with pytest.raises(ValueError, match="frames per object"):
            coil_split(n)
    with pytest.raises(ValueError, match="at least 64 frames"):
        coil_split(4, frames=40)


def test_random_split_sizes_and_classes():
    labels = np.arange(1000) % 10
    train, val = random_split(labels, 300, np.random.default_rng(0), 10)
    assert len(train) == 300 and len(val) == round(0.1111 * 300) == 33
    assert not set(train) & set(val)
    assert set(labels[train]) == set(labels[val]) == set(range(10))
    again = random_split(labels, 300, np.random.default_rng(0), 10)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_random_split_is_the_documented_permutation():
    labels = np.arange(500) % 5
    perm = np.random.default_rng(3).permutation(500)
    train, val = random_split(labels, 100, np.random.default_rng(3), 5)
    assert np.array_equal(train, np.sort(perm[:100]))
    assert np.array_equal(val, np.sort(perm[100:111]))


def test_random_split_redraws_until_every_class_is_in_both():
    labels = np.zeros(200, np.int64)
    labels[:100] = 1
    labels[[7, 150]] = 2  # a rare class: most draws miss it in the validation set
    rng = np.random.default_rng(1)
    first = rng.permutation(200)
    assert 2 not in labels[first[30:33]]  # the first draw must be redrawn
    train, val = random_split(labels, 30, np.random.default_rng(1), 3)
    assert set(labels[train]) == set(labels[val]) == {0, 1, 2}


def test_random_split_for_the_largest_n_uses_the_rest():
    labels = np.arange(60000) % 10
    train, val = random_split(labels, 54000, np.random.default_rng(0), 10)
    assert len(train) + len(val) == 59999


def test_random_split_errors_are_clear():
    labels = np.arange(100) % 10
    with pytest.raises(ValueError, match="each of the 10 classes in both; use budgets from 86"):
        random_split(labels, 50, np.random.default_rng(0), 10)  # 6 validation videos < 10
    with pytest.raises(ValueError, match="training videos"):
        random_split(labels, 95, np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match=r"classes \[10, 11\]"):
        random_split(np.arange(1000) % 10, 200, np.random.default_rng(0), 12)


def test_subset_index_is_deterministic_sorted_and_distinct():
    a = subset_index(1000, 50, seed=4, part=0)
    assert np.array_equal(a, subset_index(1000, 50, seed=4, part=0))
    assert np.array_equal(a, np.unique(a)) and len(a) == 50 and a.max() < 1000
    assert not np.array_equal(a, subset_index(1000, 50, seed=5, part=0))
    assert not np.array_equal(a, subset_index(1000, 50, seed=4, part=1))
    assert np.array_equal(subset_index(7, None, seed=0), np.arange(7))
    assert np.array_equal(subset_index(7, 9, seed=0), np.arange(7))
