"""`Facts`: what a dataset module declares of itself (`FACTS`); the table of all of them is
`gksparse.data.catalog`."""

from __future__ import annotations

from dataclasses import dataclass

VIDEO_LABELS = "labeled training videos"  # the x axis of most datasets' plots


@dataclass(frozen=True)
class Facts:
    """What the rest of the package knows of a dataset.

    shape: a frame's `(C, H, W)`; frames: per video (None where they vary or are a setting).
    labeled: how labeled sets are drawn from the training videos: 'random' videos, or
    'frames' per object (COIL-100); None where there is no labeled split of its own (it
    classifies another dataset's, `classify`) or it is known once a folder is read (your own
    videos). labeled_pool: the training videos (or objects) those sets are drawn from.
    whiten: ZCA by default; fresh_head: the reference rebuilt the classifier per label budget
    (METHOD.md 5.2); generated: made from official files and cached (`gksparse.cache`).
    """

    name: str
    shape: tuple[int, int, int] | None
    frames: int | None
    classes: int | None
    labeled: str | None
    labeled_pool: int | None
    whiten: bool
    fresh_head: bool = False
    classify: str | None = None
    x_label: str = VIDEO_LABELS
    generated: bool = True
