"""COIL-100: each object on a turntable is one 72-frame video (METHOD.md section 6).

100 objects photographed at poses 0, 5, ..., 355 degrees (`obj{i}__{angle}.png`, 128x128 RGB),
resized to 32x32 (PIL bilinear). Each object is its own class. ZCA over all frames. Pretraining
and testing use all the videos; the labeled split takes the same frames of every video
(`coil_split`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .download import Checksum, check_local, fetch, safe_extract, warn_once
from .errors import DataError
from .facts import Facts
from .parallel import fill
from .request import Request
from .splits import coil_split, subset_index
from .videocache import CacheWriter

__all__ = ["coil_split", "locate", "generate", "read_object"]

NAME = "coil100"
VERSION = 1
WHITEN = True
SEEDED = False
FOLDER = "coil-100"
ARCHIVE = "coil-100.zip"
URL = "https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-100/coil-100.zip"
# Columbia publishes no checksum; this SHA-256 and size are those recorded by TensorFlow Datasets
# (url_checksums/coil100.txt) for the same address.
ARCHIVE_SHA256 = Checksum(
    "sha256", "fcb4b8b01c0778f416d8d7a09f45082c4f7075cc74743dcddd5c44307bd4afe7"
)
ARCHIVE_BYTES = 130688843
NUM_OBJECTS = 100
ANGLES = tuple(range(0, 360, 5))
SIZE = 32
FACTS = Facts(
    NAME,
    (3, SIZE, SIZE),
    len(ANGLES),
    NUM_OBJECTS,
    "frames",
    NUM_OBJECTS,
    WHITEN,
    fresh_head=True,
    x_label="training frames per object (COIL-100)",
)
_PATTERN = re.compile(r"obj(\d+)__(\d+)\.png")
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR


def _hint(root: Path) -> str:
    return (
        f"put the official {ARCHIVE} or its unpacked {FOLDER} folder "
        f"(obj1__0.png ... obj100__355.png) in {root}"
    )


def locate(root: Path, *, download: bool = True, progress: bool = True) -> list[Path]:
    """The image files of every object found under `root/coil-100`, 72 poses each, in order.

    When the folder has no images, `root/coil-100.zip` is unpacked (downloaded first when
    missing and `download`). A folder with fewer than 100 objects is used with a warning.
    """
    root = Path(root)
    folder = root / FOLDER
    if not _objects(folder):
        archive = root / ARCHIVE
        if archive.is_file():
            check_local([(archive, ARCHIVE_SHA256)], "COIL-100")
        elif download:
            hint = _hint(root)
            fetch([URL], archive, ARCHIVE_SHA256, hint=hint, size=ARCHIVE_BYTES, progress=progress)
        else:
            raise DataError(f"COIL-100 is missing; {_hint(root)} (or allow downloads)")
        safe_extract(archive, root, progress=progress)
    objects = _objects(folder)
    if not objects:
        raise DataError(f"{folder} has no obj{{i}}__{{angle}}.png images; {_hint(root)}")
    if len(objects) < NUM_OBJECTS:
        warn_once(
            f"coil100:{folder}",
            f"{folder} has {len(objects)} of the {NUM_OBJECTS} COIL-100 objects; using those",
        )
    files = []
    for obj in objects:
        for angle in ANGLES:
            path = folder / f"obj{obj}__{angle}.png"
            if not path.is_file():
                raise DataError(f"the COIL-100 image {path} is missing; {_hint(root)}")
            files.append(path)
    return files


def _objects(folder: Path) -> list[int]:
    """The object numbers with at least one image in `folder`, sorted."""
    if not folder.is_dir():
        return []
    found = (_PATTERN.fullmatch(p.name) for p in folder.iterdir())
    return sorted({int(m.group(1)) for m in found if m})


def read_image(path: Path, size: int = SIZE) -> np.ndarray:
    """An image as float32 `(3, size, size)` in [0, 1], resized with PIL's bilinear filter."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), _BILINEAR)
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(
            f"the image {path} is corrupt or truncated ({e}); replace it with the official file"
        ) from e
    return pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)


def read_object(paths: list[Path], size: int = SIZE) -> np.ndarray:
    """The images of one video, in order: float32 `(T, 3, size, size)`."""
    return np.stack([read_image(p, size) for p in paths])


def read_objects(objects: list[list[Path]]) -> np.ndarray:
    """Several videos of equal length: float32 `(N, T, 3, 32, 32)`."""
    return np.stack([read_object(paths) for paths in objects])


def generate(files: list[Path], writer: CacheWriter, request: Request) -> dict[str, Any]:
    """Write `train_videos` and `train_labels` (the test videos are the first `test_size`)."""
    objects = [files[i : i + len(ANGLES)] for i in range(0, len(files), len(ANGLES))]
    index = subset_index(len(objects), request.train_size, request.seed, 0)
    writer.create("train_videos", (len(index), len(ANGLES), 3, SIZE, SIZE))
    writer.save("train_labels", np.arange(len(index), dtype=np.int64))
    tasks = [(i, ([objects[k]],)) for i, k in enumerate(index)]
    fill(writer.path("train_videos"), read_objects, tasks, desc=NAME, progress=request.progress)
    test = len(index) if request.test_size is None else min(request.test_size, len(index))
    return {"num_classes": len(index), "split": "frames", "test_from_train": test}
