"""The paper's settings as data: per dataset its own sizes and shapes (the paper's protocol),
`small` (the protocol in minutes on a CPU) and `smoke` (seconds, for tests), and the named
configs every experiment takes (the methods, the ablations).

`python -m gksparse.run <dataset> with <method> [nospatial|nolifetime] [small|smoke] ...`
reads them from here (`gksparse.protocol.experiment`); everything not set here is a default
of `ProtocolConfig` (`gksparse.protocol.config`). Adding a dataset: its data module
(`gksparse.data.<name>`, with its `FACTS`), a `Preset` below and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model.methods import METHODS

# The ablations of the methods that pretrain with sparsity (METHOD.md section 7).
ABLATIONS: dict[str, dict[str, Any]] = {
    "nospatial": {"spatial": False},
    "nolifetime": {"lifetime": False},
}
SIZES = ("small", "smoke")
# `small` of the short-video datasets: fewer videos and epochs than the paper, so ten times
# its learning rate (end-to-end too: lr / 10) and 10 classifier epochs; with the paper's the
# few hundred pretraining steps barely start (the decoder filters stay noise).
_TEN_TIMES = {"lr": 1e-3, "classifier_epochs": 10}
_SHORT_VIDEOS = {"batch_size": 30, "epochs": 50}  # the paper's for Rotated MNIST and CIFAR-10
_SMOKE = {"train_size": 240, "test_size": 60, "epochs": 1, "num_labeled": [200], "pictures": 2}


@dataclass(frozen=True)
class Preset:
    """One dataset's settings: `paper` (its own keys at the paper's sizes), and what `small`
    and `smoke` change; `folder_options`: keys gathered into `data_options` for the loader
    (your own videos' folder options)."""

    paper: dict[str, Any]
    small: dict[str, Any]
    smoke: dict[str, Any]
    folder_options: tuple[str, ...] = field(default=())


def _shapes(filters: int, enc_kernel: int, dec_kernel: int, groups: int) -> dict[str, int]:
    """The encoder's filters and kernel size, the decoder's kernel size, the WTA groups."""
    return {
        "filters": filters,
        "enc_kernel": enc_kernel,
        "dec_kernel": dec_kernel,
        "groups": groups,
    }


def _subset(train_size: int, test_size: int, epochs: int) -> dict[str, int | float]:
    """`small` of a short-video dataset: a subset of the videos, few epochs, `_TEN_TIMES`."""
    return {"train_size": train_size, "test_size": test_size, "epochs": epochs, **_TEN_TIMES}


MNIST_BUDGETS = [300, 600, 1000, 2000, 5000, 10000, 54000]  # the paper's label budgets
CIFAR_BUDGETS = [300, 600, 1000, 2000, 5000, 10000, 45000]

# The COIL-100 protocol (NEC Animal is classified on COIL-100 too): 10-video batches, budgets
# of training frames per object.
_COIL = {"batch_size": 10, **_shapes(128, 5, 7, 32), "num_labeled": [2, 4, 8, 16, 32]}
_COIL_SMALL = {
    "epochs": 3,
    "classifier_epochs": 20,
    "num_labeled": [4, 16],
    **_shapes(64, 5, 7, 16),
}
_COIL_SMOKE = {"epochs": 1, "num_labeled": [4], "pictures": 2, **_shapes(16, 5, 7, 4)}

PRESETS: dict[str, Preset] = {
    "mnistrotated": Preset(
        paper={**_SHORT_VIDEOS, **_shapes(64, 3, 11, 16), "num_labeled": MNIST_BUDGETS},
        # The whole protocol for one CNN method in about 8 minutes on a 2-core CPU; same
        # shapes; 300 pretraining steps.
        small={**_subset(3000, 1000, epochs=3), "num_labeled": [300, 600]},
        smoke=_SMOKE,
    ),
    "cifar10scanned": Preset(
        paper={**_SHORT_VIDEOS, **_shapes(256, 5, 7, 64), "num_labeled": CIFAR_BUDGETS},
        # The whole protocol for one CNN method in about 10 minutes on a 2-core CPU; same
        # shapes; 100 pretraining steps.
        small={**_subset(1500, 500, epochs=2), "num_labeled": [300]},
        smoke={**_SMOKE, "filters": 32, "groups": 8},
    ),
    "coil100": Preset(paper={**_COIL, "epochs": 200}, small=_COIL_SMALL, smoke=_COIL_SMOKE),
    "necanimal": Preset(
        paper={"classify_dataset": "coil100", **_COIL, "epochs": 300},
        small=_COIL_SMALL,
        smoke=_COIL_SMOKE,
    ),
    "videos": Preset(
        paper={
            "frames": 16,  # clip length; training clips start at random, test clips at frame 0
            "size": 32,  # frame size: H (square) or [H, W]
            "grayscale": False,
            "labeled": None,  # None: class subfolders if there are any
            "train_split": None,  # e.g. ucfTrainTestlist/trainlist01.txt
            "test_split": None,  # e.g. ucfTrainTestlist/testlist01.txt
            "test_dir": None,
            "test_fraction": 0.2,
            "zca_clips": None,  # fit it on that many clips (None: all)
            "workers": 0,  # DataLoader processes that decode the videos
            "cache_dir": None,  # clips as memory maps there, for folders too large for memory
            "batch_size": 10,
            **_shapes(128, 5, 7, 32),
            "epochs": 50,
            # Labeled-set sizes: each needs n + round(0.1111 n) training videos and
            # n >= classes; empty: pretraining only.
            "num_labeled": [],
        },
        small={"epochs": 3, "filters": 64, "groups": 16},
        smoke={"epochs": 1, "frames": 4, "pictures": 2, "filters": 16, "groups": 4},
        # What `gksparse.data.videos.load_folder` takes besides the protocol's own keys.
        folder_options=(
            "frames",
            "size",
            "grayscale",
            "labeled",
            "train_split",
            "test_split",
            "test_dir",
            "test_fraction",
            "zca_clips",
            "workers",
            "cache_dir",
        ),
    ),
}


def preset(dataset: str) -> Preset:
    """The `Preset` of `dataset`; a ValueError (one sentence) naming the datasets otherwise."""
    try:
        return PRESETS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of: {', '.join(PRESETS)}."
        ) from None


def named_configs(dataset: str) -> dict[str, dict[str, Any]]:
    """Every named config of `dataset`'s experiment: each method (`method=<name>`), the
    ablations, `small` and `smoke`."""
    p = preset(dataset)
    methods = {name: {"method": name} for name in METHODS}
    return {**methods, **ABLATIONS, "small": p.small, "smoke": p.smoke}
