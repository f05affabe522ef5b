"""The in-memory form every dataset returns: videos, labels and a frame-validity mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .splits import coil_split, random_split
from .zca import ZCA

SPLITS = ("random", "frames", "none")


@dataclass
class Videos:
    """A set of equally shaped (possibly padded) videos.

    videos: float32 `(N, T, C, H, W)`, a numpy array or a read-only memory map.
    labels: int64 `(N,)`, or None for unlabeled videos.
    mask:   bool `(N, T)`, True for real frames, False for padding; None means all real.
    """

    videos: np.ndarray
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.videos.ndim != 5:
            raise ValueError(f"videos must be (N, T, C, H, W), got shape {self.videos.shape}")
        n, t = self.videos.shape[:2]
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {self.labels.shape}")
        if self.mask is not None and self.mask.shape != (n, t):
            raise ValueError(f"mask must be ({n}, {t}), got {self.mask.shape}")

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of one frame."""
        return tuple(self.videos.shape[2:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> Videos:
        """The videos at `index` (an integer array), copied into memory."""
        index = np.asarray(index)
        return Videos(
            np.ascontiguousarray(self.videos[index]),
            None if self.labels is None else self.labels[index],
            None if self.mask is None else self.mask[index],
        )


@dataclass
class VideoData:
    """One dataset as the protocol uses it: unlabeled pretraining videos and the labeled sets.

    train, test: the pretraining videos and the videos whose reconstruction loss is reported.
    num_classes: the number of classes (0 for unlabeled data).
    name: the dataset's name.
    split: how `labeled_split` draws labeled sets: 'random' (a random permutation of `train`,
        Rotated MNIST and Scanned CIFAR-10), 'frames' (the same frames of every video,
        COIL-100) or 'none' (no labels, NEC Animal).
    zca: the whitening applied to the videos, or None; apply it to new videos to match.
    """

    train: Videos
    test: Videos
    num_classes: int
    name: str = "videos"
    split: str = "random"
    zca: ZCA | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    def labeled_split(self, n: int, rng: np.random.Generator) -> tuple[Videos, Videos, Videos]:
        """The labeled (train, validation, test) sets for `n` labels (METHOD.md section 6).

        'random': `n` training videos and the next `round(0.1111 * n)` as validation, drawn from
        `train` until every class is in both; the test set is the whole `test`.
        'frames': `n` is frames per object; `coil_split(n)` picks the frames of every video in
        `train`, so each video gives one short training, validation and test video.
        """
        if self.split == "none" or self.train.labels is None:
            raise ValueError(
                f"{self.name} has no labels, so it has no labeled split; its encoder is "
                "evaluated on COIL-100's labeled split instead (load('coil100'))"
            )
        if self.split == "random":
            train, val = random_split(self.train.labels, n, rng, self.num_classes)
            return self.train.subset(train), self.train.subset(val), self.test
        return tuple(self._frames(f) for f in coil_split(n, self.train.videos.shape[1]))

    def _frames(self, frames: list[int]) -> Videos:
        """The frames `frames` of every training video, all real."""
        videos = np.ascontiguousarray(self.train.videos[:, frames])
        mask = np.ones(videos.shape[:2], dtype=bool)
        return Videos(videos, self.train.labels, mask)
