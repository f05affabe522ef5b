"""Your own videos as the protocol's dataset `videos`: a folder read through `VideoFolder`,
one clip per video, split into training and test videos (`gksparse.data.load("videos", ...)`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .containers import VideoData
from .errors import DataError
from .facts import Facts
from .seeds import SubsetPart, subset_rng
from .splits import subset_index

NAME = "videos"
WHITEN = True  # whitened by default, as COIL-100
# Shape, frames, classes and labeled sets are known once the folder is read.
FACTS = Facts(NAME, None, None, None, None, None, WHITEN, fresh_head=True, generated=False)


def load_folder(
    data_dir: str | os.PathLike | None,
    *,
    frames: int | None = 16,
    size: int | tuple[int, int] | None = 32,
    grayscale: bool = False,
    labeled: bool | None = None,
    train_split: str | os.PathLike | None = None,
    test_split: str | os.PathLike | None = None,
    test_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    train_size: int | None = None,
    test_size: int | None = None,
    zca: bool = False,
    zca_epsilon: float = 1e-3,
    zca_clips: int | None = None,
    seed: int = 0,
    workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> VideoData:
    """A folder of your own videos as the protocol's `VideoData`: one clip per video.

    Training clips start at random (drawn once, from `seed`); test clips are the first ones.
    The test videos are those of `test_split` (a split list, e.g. UCF-101's
    `testlist01.txt`, while `train_split` names the training ones), else of `test_dir` (a
    second folder with the same classes), else a random `test_fraction` of every class of a
    labeled folder. An unlabeled folder without them is its own test set (the reconstruction
    loss is then measured on the training videos, as for NEC Animal); it has no labeled split
    (`split='none'`): pretraining only.
    train_size, test_size: a deterministic random subset of that many videos.
    zca: fit a ZCA whitening (`zca_epsilon`) on the training clips' real frames (on
        `zca_clips` of them, default all) and apply it to both sets; kept in `VideoData.zca`.
    workers: DataLoader processes that decode the videos.
    cache_dir: write the clips as `.npy` memory maps in a temporary folder there instead of
        holding them in memory (for large folders); the files are unlinked once mapped, so
        nothing is left behind (POSIX) and the disk space is freed when the process ends.
    """
    if data_dir is None:
        raise DataError("pass data_dir=<your videos folder> (class subfolders or a flat set).")
    from .videofolder import VideoFolder  # torch's DataLoader: not for the other datasets

    train = VideoFolder(
        data_dir,
        frames=frames,
        size=size,
        grayscale=grayscale,
        clip="random",
        split=train_split,
        labeled=labeled,
    )
    if test_split is not None or test_dir is not None:
        test = VideoFolder(
            test_dir if test_dir is not None else data_dir,
            frames=train.frames,
            size=train.size,
            grayscale=grayscale,
            clip="first",
            split=test_split,
            classes=train.classes,
            labeled=train.labeled,
        )
    elif train.labeled:
        keep, held = _hold_out(train.labels, test_fraction, seed)
        train, test = train.view(indices=keep), train.view(clip="first", indices=held)
    else:
        test = train.view(clip="first")
    train = train.view(indices=subset_index(len(train), train_size, seed, 0))
    test = test.view(indices=subset_index(len(test), test_size, seed, 1))
    with tempfile.TemporaryDirectory(prefix="gksparse-videos-", dir=cache_dir) as tmp:
        whitening = None
        if zca:
            whitening = train.fit_zca(
                zca_epsilon, max_clips=zca_clips, seed=seed, workers=workers, progress=progress
            )
            test.zca = whitening
        parts = []
        for name, folder in (("train", train), ("test", test)):
            path = None if cache_dir is None else Path(tmp) / f"{name}.npy"
            parts.append(folder.to_videos(path, seed=seed, workers=workers, progress=progress))
    return VideoData(
        *parts,
        num_classes=train.num_classes,
        name="videos",
        split="random" if train.labeled else "none",
        zca=whitening,
    )


def _hold_out(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted indices: `fraction` of every class held out, at least one of
    every class with two videos or more, never all of a class."""
    if not 0 < fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {fraction}.")
    rng = subset_rng(seed, SubsetPart.HELD_OUT)
    held: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(members)), 1), len(members) - 1)
        held.extend(rng.choice(members, size=k, replace=False).tolist())
    held_out = np.sort(np.array(held, np.int64))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out
