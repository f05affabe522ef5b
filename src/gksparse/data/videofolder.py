"""Your own videos: a folder of frame folders or video files, read as fixed-length clips.

Layouts, detected from the folder (or chosen with `labeled=`; see `discovery`):

    root/<class>/<video>    labeled: the classes are the sorted class-folder names
    root/<video>            unlabeled (a flat set)

A video is a folder of frames (jpg/png/bmp, in natural name order: `f2` before `f10`) or a
video file (mp4/avi/webm/mkv/mov, decoded with PyAV: `pip install 'gksparse[video]'`).
Opening a folder only probes headers (frame counts and sizes); frames are decoded when a
clip is read, e.g. in DataLoader workers, so a large folder is never loaded whole.

A clip is `frames` consecutive frames from a random start ('random', for training), the
start ('first') or the middle ('center') of the video; a shorter video is padded with zero
frames that its validity mask marks False. Pixels are scaled to [0, 1], frames resized to
`size` (bilinear, aspect ratio not kept), optionally made grey, and optionally whitened with
a ZCA fitted on training clips (`VideoFolder.fit_zca`). Bad videos (unreadable, no frames,
frames of different sizes) are skipped with a `BadVideoWarning` naming the file; a folder
with nothing usable left raises one `DataError`.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .containers import Videos
from .decoding import VideoEntry, import_av, probe_videos, read_images, to_array
from .discovery import (
    BadVideoWarning,
    drop_unknown_classes,
    filter_by_list,
    find_videos,
    read_split_list,
)
from .errors import DataError
from .files import natural_key
from .zca import ZCA, fit_zca

__all__ = [
    "CLIP_MODES",
    "BadVideoWarning",
    "ClipMode",
    "VideoEntry",
    "VideoFolder",
    "import_av",
    "natural_key",
    "read_split_list",
]

ClipMode = Literal["random", "first", "center"]
CLIP_MODES = ("random", "first", "center")


class VideoFolder(Dataset):
    """A folder of videos as a torch `Dataset` of clips; `to_videos` for the training engine.

    root:      the folder (see the module docstring for its layouts).
    frames:    clip length `T`; None: whole videos, padded to the longest.
    size:      frame size `H` (square) or `(H, W)`; None: keep the videos' own size (videos of
               another size than the most common one are skipped with a warning).
    grayscale: one channel instead of RGB.
    clip:      where a clip starts: 'random' (training), 'first' or 'center' (evaluation).
    split:     a UCF-101-style split list (path, or a name inside root): only its videos are
               used; a `classInd.txt` beside it fixes the class order.
    classes:   the class names in label order (e.g. a training folder's `classes` for its
               test folder); default: the sorted class folders (or `classInd.txt`).
    labeled:   None: detect; True: class subfolders; False: every video, unlabeled.
    zca:       a whitening applied to every clip (see `fit_zca`).
    threads:   threads that probe the videos' headers when the folder is opened.

    Items (`dataset[i]`): a dict with 'video' float32 `(T, C, H, W)`, 'mask' bool `(T,)`,
    'label' int64 `()` (-1 when unlabeled) and 'index' int64 `()`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        frames: int | None = 16,
        size: int | tuple[int, int] | None = 32,
        grayscale: bool = False,
        clip: ClipMode = "first",
        split: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
        labeled: bool | None = None,
        zca: ZCA | None = None,
        threads: int = 8,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"the videos folder {self.root} does not exist; check its path.")
        if frames is not None and frames < 1:
            raise ValueError(f"frames must be at least 1 (or None for whole videos), got {frames}.")
        if clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}.")
        self.grayscale = grayscale
        self.clip = clip
        candidates, found_classes, self.labeled = find_videos(self.root, labeled)
        split_path = None if split is None else self._resolve(split)
        if classes is None and split_path is not None:
            class_index = split_path.parent / "classInd.txt"
            if class_index.is_file() and self.labeled:  # UCF-101's '1 ApplyEyeMakeup' lines
                lines = class_index.read_text().splitlines()
                classes = [line.split()[-1] for line in lines if line.strip()]
        self.classes: list[str] | None = None
        if self.labeled:
            self.classes = list(classes) if classes is not None else found_classes
            candidates = drop_unknown_classes(candidates, self.classes)
        if split_path is not None:
            candidates = filter_by_list(candidates, read_split_list(split_path), split_path)
        self.entries, (h, w) = probe_videos(self.root, candidates, size, threads, self.classes)
        self.size = (h, w)
        self.frames = frames if frames is not None else max(e.length for e in self.entries)
        self._zca: ZCA | None = None
        self.zca = zca

    # -- the videos ------------------------------------------------------------------------
    def _resolve(self, split: str | os.PathLike) -> Path:
        path = Path(split).expanduser()
        for candidate in (path, self.root / path):
            if candidate.is_file():
                return candidate
        raise DataError(f"the split list {split} was found neither as given nor in {self.root}.")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        """Every video's path relative to the root, in dataset order."""
        return [e.name for e in self.entries]

    @property
    def labels(self) -> np.ndarray | None:
        """int64 `(N,)` class indices, or None for an unlabeled folder."""
        return np.array([e.label for e in self.entries], np.int64) if self.labeled else None

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabeled)."""
        return len(self.classes or ())

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of one frame of a clip."""
        return (1 if self.grayscale else 3, *self.size)

    @property
    def zca(self) -> ZCA | None:
        """The whitening applied to every clip, or None."""
        return self._zca

    @zca.setter
    def zca(self, zca: ZCA | None) -> None:
        d = int(np.prod(self.frame_shape))
        if zca is not None and zca.dim != d:
            raise ValueError(
                f"the whitening is for frames of {zca.dim} values, but this folder's frames "
                f"{self.frame_shape} have {d}; use the same size and grayscale as when fitting."
            )
        self._zca = zca

    # -- clips -----------------------------------------------------------------------------
    def clip_start(
        self,
        index: int,
        clip: ClipMode | None = None,
        generator: torch.Generator | None = None,
    ) -> int:
        """First frame of video `index`'s clip: random (from `generator`, default torch's
        global RNG, which DataLoader seeds per worker), 0 or centred."""
        clip = clip or self.clip
        spare = self.entries[index].length - self.frames
        if spare <= 0 or clip == "first":
            return 0
        if clip == "center":
            return spare // 2
        return int(torch.randint(spare + 1, (), generator=generator).item())

    def read(self, index: int, start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The clip of video `index` from frame `start` (default: `clip_start`).

        Returns float32 `(T, C, H, W)` frames (in [0, 1], or whitened) and its bool `(T,)`
        mask; frames past the video's end are zeros with mask False.
        """
        entry = self.entries[index]
        start = self.clip_start(index) if start is None else start
        count = max(0, min(self.frames, entry.length - start))
        video = np.zeros((self.frames, *self.frame_shape), np.float32)
        mask = np.zeros(self.frames, bool)
        for i, image in enumerate(read_images(entry, start, count)):
            video[i] = to_array(image, self.size, self.grayscale)
            mask[i] = True
        if self._zca is not None:
            self._zca.apply(video, mask)
        return video, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video, mask = self.read(index)
        return {
            "video": torch.from_numpy(video),
            "mask": torch.from_numpy(mask),
            "label": torch.tensor(self.entries[index].label, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def view(
        self, *, clip: ClipMode | None = None, indices: Sequence[int] | None = None
    ) -> VideoFolder:
        """The same folder (or its videos at `indices`) with another clip mode; no re-probing."""
        if clip is not None and clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}.")
        other = copy.copy(self)
        other.clip = clip or self.clip
        if indices is not None:
            other.entries = [self.entries[int(i)] for i in indices]
        return other

    def loader(
        self, batch_size: int = 32, *, shuffle: bool = False, workers: int = 0, **kwargs: Any
    ) -> DataLoader:
        """A DataLoader over the clips; with `workers`, decoding runs in worker processes."""
        return DataLoader(
            self, batch_size=batch_size, shuffle=shuffle, num_workers=workers, **kwargs
        )

    def to_videos(
        self,
        path: str | os.PathLike | None = None,
        *,
        indices: Sequence[int] | None = None,
        seed: int | None = None,
        batch_size: int = 32,
        workers: int = 0,
        progress: bool = False,
    ) -> Videos:
        """Read one clip per video into a `Videos` for the training engine.

        path:    write the clips to this `.npy` file and return them as a read-only memory
                 map (for folders too large for memory); None: an in-memory array.
        indices: the videos to read (default: all), in that order.
        seed:    random clip starts are drawn here from this seed (default: torch's global
                 RNG), so they do not depend on `workers`.
        The mask is None when no clip is padded; labels are None when unlabeled.
        """
        index = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        starts = [self.clip_start(int(i), generator=generator) for i in index]
        shape = (len(index), self.frames, *self.frame_shape)
        tmp = None
        if path is None:
            videos = np.zeros(shape, np.float32)
        else:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            videos = open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        mask = np.zeros(shape[:2], bool)
        clips = _Clips(self, index.tolist(), starts)
        loader = DataLoader(clips, batch_size=batch_size, num_workers=workers)
        try:
            at = 0
            for batch in tqdm(loader, desc="read clips", disable=not progress, leave=False):
                n = len(batch["video"])
                videos[at : at + n] = batch["video"].numpy()
                mask[at : at + n] = batch["mask"].numpy()
                at += n
            if tmp is not None:
                videos.flush()
                del videos
                os.replace(tmp, path)
                videos = np.load(path, mmap_mode="r")
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        labels = None if self.labels is None else self.labels[index]
        return Videos(videos, labels, None if mask.all() else mask)

    def fit_zca(
        self,
        epsilon: float = 1e-3,
        *,
        max_clips: int | None = None,
        seed: int = 0,
        batch_size: int = 32,
        workers: int = 0,
        progress: bool = False,
    ) -> ZCA:
        """Fit a ZCA whitening on this folder's clips (real frames only) and apply it from now on.

        The clips are decoded into a temporary memory map that `gksparse.data.zca.fit_zca`
        reads in chunks, so memory holds only the `D x D` covariance and a chunk of frames,
        whatever the folder's size. `max_clips`: fit on that many videos drawn with `seed`.
        """
        indices = None
        if max_clips is not None and max_clips < len(self):
            rng = np.random.default_rng(seed)
            indices = np.sort(rng.choice(len(self), size=max_clips, replace=False))
        previous, self._zca = self._zca, None
        try:
            with tempfile.TemporaryDirectory(prefix="gksparse-zca-") as tmp:
                clips = self.to_videos(
                    Path(tmp) / "clips.npy",
                    indices=indices,
                    seed=seed,
                    batch_size=batch_size,
                    workers=workers,
                    progress=progress,
                )
                zca = fit_zca(clips.videos, clips.mask, epsilon, progress=progress)
                real = len(clips) * self.frames if clips.mask is None else int(clips.mask.sum())
                if real <= zca.dim:
                    warnings.warn(
                        f"the ZCA of {zca.dim}-value frames was fitted on only {real} frames, "
                        "so it inflates what those frames lack (e.g. in test videos) by up to "
                        f"1/sqrt(epsilon) = {epsilon**-0.5:.3g}; use more clips, smaller or "
                        "grey frames, or a larger epsilon.",
                        stacklevel=2,
                    )
                del clips
        except BaseException:
            self._zca = previous
            raise
        self._zca = zca
        return zca


class _Clips(Dataset):
    """Given clips of a folder: item k is video `indices[k]` from frame `starts[k]`."""

    def __init__(self, folder: VideoFolder, indices: list[int], starts: list[int]) -> None:
        self.folder, self.indices, self.starts = folder, indices, starts

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        video, mask = self.folder.read(self.indices[k], self.starts[k])
        return {"video": torch.from_numpy(video), "mask": torch.from_numpy(mask)}
