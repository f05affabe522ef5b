"""Which videos or frames go where: deterministic subsets and the labeled splits of the protocol."""

from __future__ import annotations

import numpy as np

from .seeds import subset_rng

VAL_FRACTION = 0.1111
COIL_WINDOW = 64  # labeled frames are taken among the first 64 poses
MAX_DRAWS = 1000


def subset_index(total: int, size: int | None, seed: int, part: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic random subset of `size` of `range(total)`.

    `size=None` (or `size >= total`) means everything; `part` tells apart the subsets drawn with
    the same seed (`seeds.SubsetPart`: 0 for training videos, 1 for test videos).
    """
    if size is None or size >= total:
        return np.arange(total)
    if size < 1:
        raise ValueError(f"a subset size must be at least 1, got {size}")
    rng = subset_rng(seed, part)
    return np.sort(rng.choice(total, size=size, replace=False))


def budget_range(split: str, train_videos: int, classes: int) -> tuple[int, int]:
    """The smallest and largest label budget `n` a labeled split can serve.

    'random': `n` and its `round(0.1111 n)` validation videos must each hold every class and
    fit in the `train_videos` together; 'frames' (COIL-100): 1 to 32 frames per object.
    The range is empty (lo > hi) when no budget fits.
    """
    if split == "frames":
        return 1, COIL_WINDOW // 2
    if split != "random":
        raise ValueError(f"the split {split!r} has no label budgets.")
    lo = classes
    while round(VAL_FRACTION * lo) < classes:
        lo += 1
    hi = int(train_videos / (1 + VAL_FRACTION)) + 1
    while hi > 0 and hi + round(VAL_FRACTION * hi) > train_videos:
        hi -= 1
    return max(lo, 1), hi


def check_budget(split: str, n: int, train_videos: int, classes: int, name: str = "") -> None:
    """Raise a ValueError (one sentence) unless the labeled split can serve a budget of `n`."""
    lo, hi = budget_range(split, train_videos, classes)
    if lo <= n <= hi:
        return
    what = f" of {name}" if name else ""
    if split == "frames":
        raise ValueError(
            f"a budget of n={n} frames per object is not possible{what}; use 1 to {hi} "
            "frames per object."
        )
    if lo > hi:
        raise ValueError(
            f"the {train_videos} training videos{what} are too few for any labeled split of "
            f"{classes} classes (a budget needs at least {lo} + {round(VAL_FRACTION * lo)}); "
            "use more training videos (train_size)."
        )
    raise ValueError(
        f"a budget of n={n} labeled videos needs {n} + {round(VAL_FRACTION * n)} (validation) of "
        f"the {train_videos} training videos{what} and at least one video of each of the "
        f"{classes} classes in both; use budgets from {lo} to {hi}."
    )


def random_split(
    labels: np.ndarray, n: int, rng: np.random.Generator, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The labeled split of Rotated MNIST and Scanned CIFAR-10 (METHOD.md section 6).

    A random permutation of the videos: the first `n` are the labeled training set, the next
    `round(0.1111 * n)` the validation set; redrawn until every class appears in both.
    labels: int `(N,)`. Returns (train indices, validation indices), each sorted.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels) if num_classes is None else np.arange(num_classes)
    n_val = round(VAL_FRACTION * n)
    check_budget("random", n, len(labels), len(classes))
    missing = np.setdiff1d(classes, labels)
    if missing.size:
        raise ValueError(f"classes {missing.tolist()} have no training video, so no split has all")
    for _ in range(MAX_DRAWS):
        perm = rng.permutation(len(labels))
        train, val = perm[:n], perm[n : n + n_val]
        if np.isin(classes, labels[train]).all() and np.isin(classes, labels[val]).all():
            return np.sort(train), np.sort(val)
    raise ValueError(f"no split of n={n} with every class in both parts in {MAX_DRAWS} draws")


def coil_split(n: int, frames: int = 72) -> tuple[list[int], list[int], list[int]]:
    """The COIL-100 labeled split for `n` frames per object (METHOD.md section 6).

    With `s = 64 // n`: training frames `0, s, 2s, ...` (n of them, all below 64); validation
    frames `s//2, s//2 + s, ...` below 64 that are not training frames; test frames all the
    other frames of `range(frames)`. Returns (train, validation, test) frame indices, in order.
    """
    check_budget("frames", n, 0, 0)
    if frames < COIL_WINDOW:
        raise ValueError(f"videos need at least {COIL_WINDOW} frames for this split, got {frames}")
    s = COIL_WINDOW // n
    train = [i * s for i in range(n)]
    val = [v for v in range(s // 2, COIL_WINDOW, s) if v not in train]
    test = [f for f in range(frames) if f not in train and f not in val]
    return train, val, test
