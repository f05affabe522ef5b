"""Finding the videos of a folder: class folders or a flat set, frame folders or video
files, in natural name order, filtered by a UCF-101-style split list.

    root/<class>/<video>    labeled: the classes are the sorted class-folder names
    root/<video>            unlabeled (a flat set)

Nothing is opened here: `decoding.probe_videos` reads the candidates' headers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .files import natural_key

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".webm", ".mkv", ".mov"})


class BadVideoWarning(UserWarning):
    """A video (or a frame of it) that was skipped because it could not be used."""


def warn(message: str) -> None:
    """A `BadVideoWarning` naming a skipped video and why."""
    warnings.warn(message, BadVideoWarning, stacklevel=3)


@dataclass
class Candidate:
    """A video found in a folder, not yet probed."""

    path: Path
    name: str  # its path relative to the root, '/'-separated
    class_name: str | None
    frame_files: tuple[str, ...] | None  # None for a video file


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


def _videos_in(folder: Path, prefix: str, class_name: str | None) -> list[Candidate]:
    """The videos directly inside `folder`: video files and frame folders (empty ones warned)."""
    found = []
    for p in _visible(folder):
        if _is_video_file(p):
            found.append(Candidate(p, prefix + p.name, class_name, None))
        elif p.is_dir():
            files = _image_files(p)
            if files:
                found.append(Candidate(p, prefix + p.name, class_name, files))
            elif not any(_is_video_file(q) or q.is_dir() for q in p.iterdir()):
                warn(f"skipping {p}: a folder without frames (no jpg/png files).")
    return found


def find_videos(root: Path, labeled: bool | None) -> tuple[list[Candidate], list[str], bool]:
    """The candidate videos, the class names found and whether the folder is labeled."""
    top: list[Candidate] = []
    by_class: dict[str, list[Candidate]] = {}
    for p in _visible(root):
        if _is_video_file(p):
            top.append(Candidate(p, p.name, None, None))
        elif p.is_dir():
            files = _image_files(p)
            if files:
                top.append(Candidate(p, p.name, None, files))
                continue
            inner = _videos_in(p, f"{p.name}/", p.name)
            if inner:
                by_class[p.name] = inner
            else:
                warn(f"skipping {p}: an empty folder (no frames, videos or video folders).")
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
            warn(f"skipping {c.path}: a video outside the class folders of a labeled folder.")
        return [c for group in by_class.values() for c in group], sorted(by_class), True
    everything = top + [c for group in by_class.values() for c in group]
    for c in everything:
        c.class_name = None
    return sorted(everything, key=lambda c: natural_key(c.name)), [], False


def drop_unknown_classes(candidates: list[Candidate], classes: list[str]) -> list[Candidate]:
    known = set(classes)
    unknown = sorted({c.class_name for c in candidates if c.class_name not in known})
    for name in unknown:
        warn(f"skipping the class folder {name!r}: it is not one of the given classes.")
    return [c for c in candidates if c.class_name in known]


def filter_by_list(candidates: list[Candidate], names: list[str], split: Path) -> list[Candidate]:
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
        warn(
            f"skipping {len(missing)} videos of the split list {split} that are not in the "
            f"folder: {', '.join(missing[:5])}{more}."
        )
    return kept
