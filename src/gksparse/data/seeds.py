"""The named random streams of a run: every random draw of the protocol follows from its seed.

`stream_seed(seed, Stream.X)` (or `stream_seed(seed, n, Stream.X)` for one label budget `n`)
is a reproducible 63-bit seed, independent of the other streams, so that adding or
resuming one stage never shifts the draws of another. The numbers are part of the records:
changing one changes every result.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """What a seed drives; `stream_seed`'s last part."""

    INIT = 0  # the model's initial weights (also randominit*'s only weights)
    PRETRAIN_SHUFFLE = 1  # the order of the pretraining batches
    LABELED_SPLIT = 2  # which videos are labeled for a budget (per budget)
    STACKED_DROPOUT = 3  # dropout of the stacked stage (per budget)
    FINETUNE_DROPOUT = 4  # dropout of the end-to-end stage (per budget)
    STACKED_SHUFFLE = 5  # the order of the stacked stage's batches (per budget)
    FINETUNE_SHUFFLE = 6  # the order of the end-to-end stage's batches (per budget)
    PROBE = 7  # scikit-learn's random_state of the linear probe (per budget)


# The data layer's subsets (`data.splits.subset_index`, a folder's held-out test videos):
# numpy's `default_rng([seed, SUBSETS, part])`; `part` tells the subsets apart.
SUBSETS = 7919


class SubsetPart(IntEnum):
    """`data`'s subsets drawn with one seed: `default_rng([seed, SUBSETS, part])`."""

    TRAIN = 0  # the training videos kept by train_size
    TEST = 1  # the test videos kept by test_size
    HELD_OUT = 2  # a labeled folder's test videos (test_fraction of every class)


def stream_seed(*parts: int) -> int:
    """A reproducible 63-bit seed for the parts (the run's seed, perhaps a budget, a
    `Stream`)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)
    return int(state[0] >> 1)


def subset_rng(seed: int, part: int) -> np.random.Generator:
    """The generator of one of `data`'s subsets (`SubsetPart`) for `seed`."""
    return np.random.default_rng([seed, SUBSETS, int(part)])
