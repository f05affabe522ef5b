"""What `load` asks of a dataset module's `generate`: which videos, drawn how."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """train_size, test_size: a deterministic random subset of that many videos (None: all);
    seed: drives the subsets and any random part of the generation; progress: show bars."""

    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    progress: bool = True

    def size(self, part: str) -> int | None:
        """The subset size of 'train' or 'test'."""
        return self.train_size if part == "train" else self.test_size
