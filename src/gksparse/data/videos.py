"""The in-memory form every dataset returns: videos, labels and a frame-validity mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """One dataset as the protocol uses it: unlabeled pretraining videos and the labeled sets."""

    train: Videos
    test: Videos
    num_classes: int
