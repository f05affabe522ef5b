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


@dataclass(frozen=True)
class Preset:
    """One dataset's settings: `paper` (its own keys at the paper's sizes), and what `small`
    and `smoke` change; `folder_options`: keys gathered into `data_options` for the loader
    (your own videos' folder options)."""

    paper: dict[str, Any]
    small: dict[str, Any]
    smoke: dict[str, Any]
    folder_options: tuple[str, ...] = field(default=())


PRESETS: dict[str, Preset] = {
    "mnistrotated": Preset(
        paper={
            "batch_size": 30,
            "filters": 64,
            "enc_kernel": 3,
            "dec_kernel": 11,
            "groups": 16,
            "epochs": 50,
            "num_labeled": [300, 600, 1000, 2000, 5000, 10000, 54000],
        },
        # The whole protocol for one CNN method in about 8 minutes on a 2-core CPU; same
        # shapes. Fewer videos and epochs than the paper, so ten times its learning rates:
        # with the paper's the 300 pretraining steps barely start (decoder filters stay noise).
        small={
            "train_size": 3000,
            "test_size": 1000,
            "epochs": 3,
            "lr": 1e-3,
            "finetune_lr": 1e-4,
            "classifier_epochs": 10,
            "num_labeled": [300, 600],
        },
        smoke={
            "train_size": 240,
            "test_size": 60,
            "epochs": 1,
            "num_labeled": [200],
            "pictures": 2,
        },
    ),
    "cifar10scanned": Preset(
        paper={
            "batch_size": 30,
            "filters": 256,
            "enc_kernel": 5,
            "dec_kernel": 7,
            "groups": 64,
            "epochs": 50,
            "num_labeled": [300, 600, 1000, 2000, 5000, 10000, 45000],
        },
        # The whole protocol for one CNN method in about 10 minutes on a 2-core CPU; same
        # shapes. As mnistrotated's small: 100 pretraining steps, so ten times the paper's
        # learning rates.
        small={
            "train_size": 1500,
            "test_size": 500,
            "epochs": 2,
            "lr": 1e-3,
            "finetune_lr": 1e-4,
            "classifier_epochs": 10,
            "num_labeled": [300],
        },
        smoke={
            "train_size": 240,
            "test_size": 60,
            "epochs": 1,
            "num_labeled": [200],
            "pictures": 2,
            "filters": 32,
            "groups": 8,
        },
    ),
    "coil100": Preset(
        paper={
            "batch_size": 10,
            "filters": 128,
            "enc_kernel": 5,
            "dec_kernel": 7,
            "groups": 32,
            "epochs": 200,
            "num_labeled": [2, 4, 8, 16, 32],  # training frames per object
        },
        small={
            "epochs": 3,
            "classifier_epochs": 20,
            "num_labeled": [4, 16],
            "filters": 64,
            "groups": 16,
        },
        smoke={"epochs": 1, "num_labeled": [4], "pictures": 2, "filters": 16, "groups": 4},
    ),
    "necanimal": Preset(
        paper={
            "classify_dataset": "coil100",
            "batch_size": 10,
            "filters": 128,
            "enc_kernel": 5,
            "dec_kernel": 7,
            "groups": 32,
            "epochs": 300,
            "num_labeled": [2, 4, 8, 16, 32],  # COIL-100 training frames per object
        },
        small={
            "epochs": 3,
            "classifier_epochs": 20,
            "num_labeled": [4, 16],
            "filters": 64,
            "groups": 16,
        },
        smoke={"epochs": 1, "num_labeled": [4], "pictures": 2, "filters": 16, "groups": 4},
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
            "filters": 128,
            "enc_kernel": 5,
            "dec_kernel": 7,
            "groups": 32,
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
