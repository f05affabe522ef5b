"""VideoData's labeled splits for each protocol."""

from __future__ import annotations

import numpy as np
import pytest

from gksparse.data import VideoData, Videos, coil_split, random_split


def labeled(n: int, t: int = 3, classes: int = 4, seed: int = 0) -> Videos:
    rng = np.random.default_rng(seed)
    videos = rng.random((n, t, 1, 2, 2), dtype=np.float32)
    return Videos(videos, (np.arange(n) % classes).astype(np.int64))


def test_random_split_takes_train_videos_and_the_whole_test_set():
    data = VideoData(labeled(200), labeled(50, seed=1), 4, name="toy")
    train, val, test = data.labeled_split(40, np.random.default_rng(2))
    index_train, index_val = random_split(data.train.labels, 40, np.random.default_rng(2), 4)
    assert np.array_equal(train.videos, data.train.videos[index_train])
    assert np.array_equal(val.labels, data.train.labels[index_val])
    assert len(train) == 40 and len(val) == 4
    assert test is data.test


def test_frame_split_cuts_every_video():
    videos = Videos(
        np.random.default_rng(0).random((3, 72, 3, 2, 2), dtype=np.float32),
        np.arange(3, dtype=np.int64),
    )
    data = VideoData(videos, videos, 3, name="coil100", split="frames")
    parts = data.labeled_split(8, np.random.default_rng(0))
    for part, frames in zip(parts, coil_split(8), strict=True):
        assert np.array_equal(part.videos, videos.videos[:, frames])
        assert np.array_equal(part.labels, [0, 1, 2])
        assert part.mask.shape == (3, len(frames)) and part.mask.all()


def test_unlabeled_data_has_no_split():
    videos = Videos(np.zeros((2, 5, 3, 2, 2), np.float32), None, np.ones((2, 5), bool))
    data = VideoData(videos, videos, 0, name="necanimal", split="none")
    with pytest.raises(ValueError, match="necanimal has no labels.*coil100"):
        data.labeled_split(4, np.random.default_rng(0))


def test_unknown_split_kind():
    with pytest.raises(ValueError, match="split must be one of random, frames, none"):
        VideoData(labeled(4), labeled(4), 4, split="other")
