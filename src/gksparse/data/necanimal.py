"""NEC Animal: 60 turntable sequences of animal toys, padded to one length (METHOD.md section 6).

The folder holds `img_clean/imgNNNN.jpg` frames and `seq_ref_clean.txt`: 4 header lines, then
`start end` frame numbers per sequence (the last sequence ends at the last frame, as the
reference fixed it). Frames are resized to 32x32 (PIL bilinear); shorter sequences are padded
with zero frames that the mask marks as not real, so losses and whitening skip them. There are
no labels: pretraining uses all the videos, and the encoder is evaluated on COIL-100.
NEC Animal has no public download address.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .coil100 import read_object
from .errors import DataError
from .facts import Facts
from .parallel import fill
from .request import Request
from .splits import subset_index
from .videocache import CacheWriter

NAME = "necanimal"
VERSION = 1
WHITEN = True
SEEDED = False
FOLDER = "necanimal"
INDEX = "seq_ref_clean.txt"
FRAMES = "img_clean"
HEADER_LINES = 4
SIZE = 32
# Pretraining videos only: it classifies COIL-100's labeled split (METHOD.md section 6).
FACTS = Facts(NAME, (3, SIZE, SIZE), None, None, None, None, WHITEN, True, classify="coil100")
_FRAME = re.compile(r"img(\d+)\.jpg")


def _hint(folder: Path) -> str:
    return (
        f"NEC Animal has no public download, so put its {FRAMES}/imgNNNN.jpg frames and "
        f"{INDEX} in {folder}"
    )


def frame_path(folder: Path, number: int) -> Path:
    """The file of frame `number`: `folder/img_clean/imgNNNN.jpg`."""
    return Path(folder) / FRAMES / f"img{number:04d}.jpg"


def read_index(path: Path, last_frame: int) -> list[tuple[int, int]]:
    """The `(start, end)` frame numbers (inclusive) of every sequence.

    Skips the 4 header lines and blank lines; the last sequence ends at `last_frame` (its end
    may be missing from the file).
    """
    try:
        lines = Path(path).read_text(encoding="latin-1").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path} ({e}); put the official {INDEX} there") from e
    sequences = []
    for number, line in enumerate(lines[HEADER_LINES:], start=HEADER_LINES + 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            bounds = [int(f) for f in fields]
        except ValueError:
            bounds = []
        if len(bounds) not in (1, 2):
            raise DataError(f"line {number} of {path} is not 'start end' frame numbers: {line!r}")
        sequences.append((bounds[0], bounds[-1]))
    if not sequences:
        raise DataError(f"{path} lists no sequences after its {HEADER_LINES} header lines")
    sequences[-1] = (sequences[-1][0], last_frame)
    for start, end in sequences:
        if end < start:
            raise DataError(f"{path} has a sequence that ends before it starts: {start} {end}")
    return sequences


def locate(root: Path, *, download: bool = True, progress: bool = True) -> list[Path]:
    """The index file, then every frame of every sequence in order (never downloads)."""
    folder = Path(root) / FOLDER
    index = folder / INDEX
    if not index.is_file() or not (folder / FRAMES).is_dir():
        raise DataError(_hint(folder))
    found = (_FRAME.fullmatch(p.name) for p in (folder / FRAMES).iterdir())
    numbers = [int(m.group(1)) for m in found if m]
    if not numbers:
        raise DataError(f"{folder / FRAMES} has no imgNNNN.jpg frames; {_hint(folder)}")
    files = [index]
    for start, end in read_index(index, max(numbers)):
        for number in range(start, end + 1):
            path = frame_path(folder, number)
            if not path.is_file():
                raise DataError(f"the NEC Animal frame {path} is missing; {_hint(folder)}")
            files.append(path)
    return files


def read_sequences(sequences: list[list[Path]], length: int) -> np.ndarray:
    """Videos padded with zero frames: float32 `(N, length, 3, 32, 32)`."""
    out = np.zeros((len(sequences), length, 3, SIZE, SIZE), np.float32)
    for i, paths in enumerate(sequences):
        out[i, : len(paths)] = read_object(paths, SIZE)
    return out


def generate(files: list[Path], writer: CacheWriter, request: Request) -> dict[str, Any]:
    """Write `train_videos` and `train_mask` (the test videos are the first `test_size`)."""
    index_file, frames = files[0], files[1:]
    folder = index_file.parent
    bounds = read_index(index_file, int(_FRAME.fullmatch(frames[-1].name).group(1)))
    sequences = [[frame_path(folder, n) for n in range(a, b + 1)] for a, b in bounds]
    chosen = subset_index(len(sequences), request.train_size, request.seed, 0)
    length = max(len(sequences[k]) for k in chosen)
    writer.create("train_videos", (len(chosen), length, 3, SIZE, SIZE))
    mask = np.zeros((len(chosen), length), bool)
    for i, k in enumerate(chosen):
        mask[i, : len(sequences[k])] = True
    writer.save("train_mask", mask)
    tasks = [(i, ([sequences[k]], length)) for i, k in enumerate(chosen)]
    fill(writer.path("train_videos"), read_sequences, tasks, desc=NAME, progress=request.progress)
    test = len(chosen) if request.test_size is None else min(request.test_size, len(chosen))
    return {"num_classes": 0, "split": "none", "test_from_train": test}
