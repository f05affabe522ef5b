"""Probing and decoding the videos of a folder: frame counts and sizes from the headers,
then frames as PIL images, from frame folders (Pillow) or video files (PyAV, seeking to the
keyframe before a clip when the stream's timing allows it).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from .discovery import VIDEO_EXTENSIONS, Candidate, warn
from .errors import DataError

BILINEAR = getattr(Image, "Resampling", Image).BILINEAR  # Pillow < 9.1 has no Resampling


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


def probe_videos(
    root: Path,
    candidates: list[Candidate],
    size: int | tuple[int, int] | None,
    threads: int,
    classes: list[str] | None,
) -> tuple[list[VideoEntry], tuple[int, int]]:
    """The usable videos among `candidates` (headers probed in `threads` threads) and the
    frame size: `size`, else the folder's most common one; warns about each skipped video.
    `classes`: the class names in label order (None: unlabeled)."""
    if not candidates:
        raise DataError(
            f"the folder {root} holds no videos (folders of jpg/png frames or "
            f"{'/'.join(sorted(e[1:] for e in VIDEO_EXTENSIONS))} files)."
        )
    if any(c.frame_files is None for c in candidates):
        import_av(next(c.path for c in candidates if c.frame_files is None))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        probed = list(pool.map(_probe_one, candidates))
    sizes: list[tuple[int, int]] = []
    good: list[tuple[Candidate, int, tuple[int, int]]] = []
    for c, result in zip(candidates, probed, strict=True):
        if isinstance(result, str):
            warn(f"skipping {c.path}: {result}.")
        else:
            good.append((c, *result))
            sizes.append(result[1])
    if size is None and sizes:
        common = Counter(sizes).most_common(1)[0][0]
        for c, _, hw in good:
            if hw != common:
                warn(
                    f"skipping {c.path}: its frames are {hw[0]}x{hw[1]}, not the folder's "
                    f"{common[0]}x{common[1]} (pass a size to resize every video)."
                )
        good = [g for g in good if g[2] == common]
    if not good:
        raise DataError(
            f"none of the {len(candidates)} videos in {root} is usable (see the "
            "warnings above for each file)."
        )
    labels = {name: i for i, name in enumerate(classes or [])}
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


def _probe_one(c: Candidate) -> tuple[int, tuple[int, int]] | str:
    """(frame count, (H, W)) of a candidate, or why it is unusable."""
    try:
        return _probe_frames(c) if c.frame_files is not None else _probe_file(c.path)
    except _Bad as e:
        return str(e)


def _probe_frames(c: Candidate) -> tuple[int, tuple[int, int]]:
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


def read_images(entry: VideoEntry, start: int, count: int) -> Iterator[Image.Image]:
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
                warn(f"{entry.path / name} is unreadable ({e}); the clip is padded from there.")
                return
        return
    yield from _read_video_file(entry.path, start, count)


def _read_video_file(path: Path, start: int, count: int) -> Iterator[Image.Image]:
    """Decode `count` frames from frame `start` of a video file, seeking when it can."""
    av = import_av(path)
    from av.video.reformatter import VideoReformatter

    # A scaler of our own, made in this process: PyAV's default one (one per thread, since
    # 18.1.1) is inherited by a forked DataLoader worker without its scaling threads, and
    # the worker then waits for them forever.
    scaler = VideoReformatter()
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
                yield Image.fromarray(scaler.reformat(frame, format="rgb24").to_ndarray())
                got += 1
    except Exception as e:
        warn(f"{path} failed to decode after {got} frames of a clip ({e}); the clip is padded.")


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


def to_array(image: Image.Image, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """A PIL frame -> float32 `(C, H, W)` in [0, 1] at `size` `(H, W)`, grey or RGB."""
    image = image.convert("L" if grayscale else "RGB")
    h, w = size
    if image.size != (w, h):
        image = image.resize((w, h), BILINEAR)
    a = np.asarray(image, dtype=np.float32) / 255.0
    return a[None] if grayscale else a.transpose(2, 0, 1)
