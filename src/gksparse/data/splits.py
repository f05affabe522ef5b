"""Which videos or frames go where: deterministic subsets and the labeled splits of the protocol."""

from __future__ import annotations

import numpy as np

VAL_FRACTION = 0.1111
COIL_WINDOW = 64  # labeled frames are taken among the first 64 poses
MAX_DRAWS = 1000


def subset_index(total: int, size: int | None, seed: int, part: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic random subset of `size` of `range(total)`.

    `size=None` (or `size >= total`) means everything; `part` tells apart the subsets drawn with
    the same seed (0 for training videos, 1 for test videos).
    """
    if size is None or size >= total:
        return np.arange(total)
    if size < 1:
        raise ValueError(f"a subset size must be at least 1, got {size}")
    rng = np.random.default_rng([seed, 7919, part])
    return np.sort(rng.choice(total, size=size, replace=False))


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
    if n < len(classes) or n_val < len(classes) or n + n_val > len(labels):
        raise ValueError(
            f"a labeled split of n={n} needs {n} + {n_val} of the {len(labels)} training videos "
            f"and at least {len(classes)} videos in each part, one per class"
        )
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
    if not 1 <= n <= COIL_WINDOW // 2:
        raise ValueError(f"n must be between 1 and {COIL_WINDOW // 2} frames per object, got {n}")
    if frames < COIL_WINDOW:
        raise ValueError(f"videos need at least {COIL_WINDOW} frames for this split, got {frames}")
    s = COIL_WINDOW // n
    train = [i * s for i in range(n)]
    val = [v for v in range(s // 2, COIL_WINDOW, s) if v not in train]
    test = [f for f in range(frames) if f not in train and f not in val]
    return train, val, test
