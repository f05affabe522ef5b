"""Your own videos: a folder of frame folders or video files, read as fixed-length clips.

Layouts, detected from the folder (or chosen with `labeled=`):

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
import itertools
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from numpy.lib.format import open_memmap
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .errors import DataError
from .splits import subset_index
from .videos import VideoData, Videos
from .zca import ZCA, fit_zca

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".webm", ".mkv", ".mov"})
ClipMode = Literal["random", "first", "center"]
CLIP_MODES = ("random", "first", "center")


class BadVideoWarning(UserWarning):
    """A video (or a frame of it) that was skipped because it could not be used."""


def import_av(path: Path | None = None) -> ModuleType:
    """The `av` module (PyAV), or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as e:
        what = f"the video file {path}" if path else "video files"
        raise ImportError(
            f"reading {what} needs PyAV; install it with: pip install 'gksparse[video]'"
        ) from e
    return av


@dataclass(frozen=True)
class VideoEntry:
    """One usable video of a folder.

    path:   its frame folder or video file.
    name:   its path relative to the root, '/'-separated (e.g. 'walk/clip01.mp4').
    label:  class index, or -1 in an unlabeled folder.
    length: frames in the video (for a file: from its header, else its packet count; a file
            that decodes to fewer frames gives a padded clip).
    frame_files: the frame file names in order for a frame folder; empty for a video file.
    """

    path: Path
    name: str
    label: int
    length: int
    frame_files: tuple[str, ...] = ()


class _Bad(Exception):
    """Why a video is unusable (the message completes 'skipping <file>: ...')."""


@dataclass
class _Candidate:
    path: Path
    name: str
    class_name: str | None
    frame_files: tuple[str, ...] | None  # None for a video file


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the digit runs of a name by value: 'f2' < 'f10'."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def read_split_list(path: str | os.PathLike) -> list[str]:
    """The video names of a UCF-101-style split list (`trainlist01.txt`, `testlist01.txt`).

    Each non-empty line starts with a path relative to the videos root, e.g.
    'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1'; the rest of the line is ignored.
    """
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    return names


def _key(name: str) -> str:
    """Name used to match split-list lines: '/'-separated, no video extension, casefolded."""
    name = name.replace("\\", "/").removeprefix("./")
    stem, dot, ext = name.rpartition(".")
    if dot and "/" not in ext and f".{ext.lower()}" in VIDEO_EXTENSIONS:
        name = stem
    return name.casefold()


def _warn(message: str) -> None:
    warnings.warn(message, BadVideoWarning, stacklevel=3)


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
        candidates, found_classes, self.labeled = _find_videos(self.root, labeled)
        split_path = None if split is None else self._resolve(split)
        if classes is None and split_path is not None:
            class_index = split_path.parent / "classInd.txt"
            if class_index.is_file() and self.labeled:  # UCF-101's '1 ApplyEyeMakeup' lines
                lines = class_index.read_text().splitlines()
                classes = [line.split()[-1] for line in lines if line.strip()]
        self.classes: list[str] | None = None
        if self.labeled:
            self.classes = list(classes) if classes is not None else found_classes
            candidates = _drop_unknown_classes(candidates, self.classes)
        if split_path is not None:
            candidates = _filter_by_list(candidates, read_split_list(split_path), split_path)
        self.entries, (h, w) = self._probe(candidates, size, threads)
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

    def _probe(
        self, candidates: list[_Candidate], size: int | tuple[int, int] | None, threads: int
    ) -> tuple[list[VideoEntry], tuple[int, int]]:
        """Usable videos and the frame size; warns about each skipped one."""
        if not candidates:
            raise DataError(
                f"the folder {self.root} holds no videos (folders of jpg/png frames or "
                f"{'/'.join(sorted(e[1:] for e in VIDEO_EXTENSIONS))} files)."
            )
        if any(c.frame_files is None for c in candidates):
            import_av(next(c.path for c in candidates if c.frame_files is None))
        with ThreadPoolExecutor(max(1, threads)) as pool:
            probed = list(pool.map(_probe_one, candidates))
        sizes: list[tuple[int, int]] = []
        good: list[tuple[_Candidate, int, tuple[int, int]]] = []
        for c, result in zip(candidates, probed, strict=True):
            if isinstance(result, str):
                _warn(f"skipping {c.path}: {result}.")
            else:
                good.append((c, *result))
                sizes.append(result[1])
        if size is None and sizes:
            common = Counter(sizes).most_common(1)[0][0]
            for c, _, hw in good:
                if hw != common:
                    _warn(
                        f"skipping {c.path}: its frames are {hw[0]}x{hw[1]}, not the folder's "
                        f"{common[0]}x{common[1]} (pass a size to resize every video)."
                    )
            good = [g for g in good if g[2] == common]
        if not good:
            raise DataError(
                f"none of the {len(candidates)} videos in {self.root} is usable (see the "
                "warnings above for each file)."
            )
        labels = {name: i for i, name in enumerate(self.classes or [])}
        entries = [
            VideoEntry(
                c.path,
                c.name,
                labels[c.class_name] if c.class_name is not None else -1,
                length,
                c.frame_files or (),
            )
            for c, length, _ in good
        ]
        if size is None:
            hw = good[0][2]
        elif isinstance(size, int):
            hw = (size, size)
        else:
            hw = (int(size[0]), int(size[1]))
        if min(hw) < 1:
            raise ValueError(f"size must be positive, got {size}.")
        return entries, hw

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
        for i, image in enumerate(_read_images(entry, start, count)):
            video[i] = self._to_array(image)
            mask[i] = True
        if self._zca is not None:
            self._zca.apply(video, mask)
        return video, mask

    def _to_array(self, image: Image.Image) -> np.ndarray:
        """A PIL frame -> float32 `(C, H, W)` in [0, 1] at this folder's size and channels."""
        image = image.convert("L" if self.grayscale else "RGB")
        h, w = self.size
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        a = np.asarray(image, dtype=np.float32) / 255.0
        return a[None] if self.grayscale else a.transpose(2, 0, 1)

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


# -- the protocol's form ---------------------------------------------------------------------
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
    rng = np.random.default_rng([seed, 7919, 2])
    held: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(members)), 1), len(members) - 1)
        held.extend(rng.choice(members, size=k, replace=False).tolist())
    held_out = np.sort(np.array(held, np.int64))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


# -- finding the videos ----------------------------------------------------------------------
def _visible(folder: Path) -> list[Path]:
    """The non-hidden entries of `folder`, in natural name order."""
    return sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def _image_files(folder: Path) -> tuple[str, ...]:
    """Names of the frame images directly in `folder`, in natural order."""
    return tuple(
        p.name for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _videos_in(folder: Path, prefix: str, class_name: str | None) -> list[_Candidate]:
    """The videos directly inside `folder`: video files and frame folders (empty ones warned)."""
    found = []
    for p in _visible(folder):
        if _is_video_file(p):
            found.append(_Candidate(p, prefix + p.name, class_name, None))
        elif p.is_dir():
            files = _image_files(p)
            if files:
                found.append(_Candidate(p, prefix + p.name, class_name, files))
            elif not any(_is_video_file(q) or q.is_dir() for q in p.iterdir()):
                _warn(f"skipping {p}: a folder without frames (no jpg/png files).")
    return found


def _find_videos(root: Path, labeled: bool | None) -> tuple[list[_Candidate], list[str], bool]:
    """The candidate videos, the class names found and whether the folder is labeled."""
    top: list[_Candidate] = []
    by_class: dict[str, list[_Candidate]] = {}
    for p in _visible(root):
        if _is_video_file(p):
            top.append(_Candidate(p, p.name, None, None))
        elif p.is_dir():
            files = _image_files(p)
            if files:
                top.append(_Candidate(p, p.name, None, files))
                continue
            inner = _videos_in(p, f"{p.name}/", p.name)
            if inner:
                by_class[p.name] = inner
            else:
                _warn(f"skipping {p}: an empty folder (no frames, videos or video folders).")
    if labeled is None:
        if top and by_class:
            raise DataError(
                f"the folder {root} holds both videos ({top[0].name}, ...) and class folders "
                f"({next(iter(by_class))}, ...); pass labeled=True to use only the class "
                "folders, or labeled=False to use every video without labels."
            )
        labeled = bool(by_class)
    if labeled:
        if not by_class:
            raise DataError(f"the folder {root} has no class folders holding videos.")
        for c in top:
            _warn(f"skipping {c.path}: a video outside the class folders of a labeled folder.")
        return [c for group in by_class.values() for c in group], sorted(by_class), True
    everything = top + [c for group in by_class.values() for c in group]
    for c in everything:
        c.class_name = None
    return sorted(everything, key=lambda c: natural_key(c.name)), [], False


def _drop_unknown_classes(candidates: list[_Candidate], classes: list[str]) -> list[_Candidate]:
    known = set(classes)
    unknown = sorted({c.class_name for c in candidates if c.class_name not in known})
    for name in unknown:
        _warn(f"skipping the class folder {name!r}: it is not one of the given classes.")
    return [c for c in candidates if c.class_name in known]


def _filter_by_list(
    candidates: list[_Candidate], names: list[str], split: Path
) -> list[_Candidate]:
    """The candidates named in a split list, in the list's order; missing ones warned."""
    by_key = {_key(c.name): c for c in candidates}
    kept, missing = [], []
    for name in names:
        c = by_key.get(_key(name))
        if c is None:
            missing.append(name)
        else:
            kept.append(c)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        _warn(
            f"skipping {len(missing)} videos of the split list {split} that are not in the "
            f"folder: {', '.join(missing[:5])}{more}."
        )
    return kept


# -- probing and decoding --------------------------------------------------------------------
def _probe_one(c: _Candidate) -> tuple[int, tuple[int, int]] | str:
    """(frame count, (H, W)) of a candidate, or why it is unusable."""
    try:
        return _probe_frames(c) if c.frame_files is not None else _probe_file(c.path)
    except _Bad as e:
        return str(e)


def _probe_frames(c: _Candidate) -> tuple[int, tuple[int, int]]:
    assert c.frame_files is not None
    first: dict[tuple[int, int], str] = {}
    for name in c.frame_files:
        try:
            with Image.open(c.path / name) as image:
                w, h = image.size
        except (OSError, ValueError) as e:
            raise _Bad(f"the frame {name} is unreadable ({e})") from e
        first.setdefault((h, w), name)
    if len(first) > 1:
        (s1, n1), (s2, n2) = list(first.items())[:2]
        raise _Bad(
            f"its frames have different sizes ({s1[0]}x{s1[1]} in {n1}, {s2[0]}x{s2[1]} in {n2})"
        )
    return len(c.frame_files), next(iter(first))


def _probe_file(path: Path) -> tuple[int, tuple[int, int]]:
    av = import_av(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _Bad("it has no video stream")
            stream = container.streams.video[0]
            length = stream.frames
            frame = next(container.decode(stream), None)
        if frame is None:
            raise _Bad("it has no frames")
        if not length:  # no count in the header (e.g. webm): count the packets
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                length = sum(1 for p in container.demux(stream) if p.size)
    except _Bad:
        raise
    except EOFError as e:  # the stream ends before its first frame
        raise _Bad("it has no frames") from e
    except Exception as e:  # any decoder error: the file is unusable
        raise _Bad(f"it is unreadable ({type(e).__name__}: {e})") from e
    return max(int(length), 1), (frame.height, frame.width)


def _read_images(entry: VideoEntry, start: int, count: int) -> Iterator[Image.Image]:
    """Frames `start .. start+count-1` of a video as PIL images (fewer if it ends early)."""
    if count <= 0:
        return
    if entry.frame_files:
        for name in entry.frame_files[start : start + count]:
            try:
                with Image.open(entry.path / name) as image:
                    image.load()
                    yield image
            except (OSError, ValueError) as e:
                _warn(f"{entry.path / name} is unreadable ({e}); the clip is padded from there.")
                return
        return
    yield from _read_video_file(entry.path, start, count)


def _read_video_file(path: Path, start: int, count: int) -> Iterator[Image.Image]:
    """Decode `count` frames from frame `start` of a video file, seeking when it can."""
    av = import_av(path)
    got = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = _seek(container, stream, start)
            if frames is None:  # no usable timestamps: decode from the beginning
                container.seek(0)
                frames = itertools.islice(container.decode(stream), start, None)
            for frame in itertools.islice(frames, count):
                yield frame.to_image()
                got += 1
    except Exception as e:
        _warn(f"{path} failed to decode after {got} frames of a clip ({e}); the clip is padded.")


def _seek(container: Any, stream: Any, start: int) -> Iterator[Any] | None:
    """Decoded frames from frame `start` on, found by seeking to the keyframe before it.

    Frame numbers come from timestamps at the stream's average rate. None when the stream
    lacks the timing to do so, or the seek landed past the frame (then decode from 0).
    """
    if start == 0:
        return container.decode(stream)
    rate, base = stream.average_rate, stream.time_base
    if not rate or not base:
        return None
    origin = stream.start_time or 0
    container.seek(origin + int(start / rate / base), stream=stream, backward=True)
    decoded = container.decode(stream)
    first = next(decoded, None)
    if first is None or first.pts is None:
        return None
    number = round((first.pts - origin) * base * rate)
    if number > start:
        return None
    return itertools.islice(itertools.chain([first], decoded), start - number, None)
