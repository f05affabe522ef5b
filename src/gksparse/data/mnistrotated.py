"""Rotated MNIST: every digit turned into a 36-frame video of itself rotating (METHOD.md section 6).

From each 28x28 digit and a random start angle in [0, 360), frame t is the digit rotated by
`start + t * 360 / frames` degrees (PIL's bilinear rotate, counter-clockwise, same canvas,
black fill), then its top-left `size x size` corner. 60000 training and 10000 test videos of
shape `(36, 1, 14, 14)`, 10 classes, not whitened.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .download import Checksum, digest_bytes, fetch, warn_once
from .errors import DataError
from .facts import Facts
from .parallel import fill
from .request import Request
from .splits import subset_index
from .videocache import CacheWriter

NAME = "mnistrotated"
VERSION = 1
WHITEN = False
SEEDED = True  # the start angles depend on the seed
FOLDER = "mnist"
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the decompressed official files (the .gz wrappers of copies are often re-compressed).
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FRAMES = 36
SIZE = 14
NUM_CLASSES = 10
NUM_TRAIN, NUM_TEST = 60000, 10000
FACTS = Facts(NAME, (1, SIZE, SIZE), FRAMES, NUM_CLASSES, "random", NUM_TRAIN, WHITEN)
CHUNK = 250  # videos per task
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR


def rotating_video(
    image: np.ndarray, start_angle: float, frames: int = FRAMES, size: int = SIZE
) -> np.ndarray:
    """A video of `image` rotating a full turn.

    image: uint8 `(H, W)` (28x28 for MNIST).
    Frame t is `Image.rotate(start_angle + t * 360 / frames, resample=BILINEAR)` of the image
    (counter-clockwise, same canvas, black fill), cut to its top-left `size x size` corner.
    Returns float32 `(frames, 1, size, size)` in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W), got {image.dtype}{image.shape}")
    if not 1 <= size <= min(image.shape):
        raise ValueError(f"size must be between 1 and {min(image.shape)}, got {size}")
    picture = Image.fromarray(image)
    video = np.empty((frames, 1, size, size), np.uint8)
    for t in range(frames):
        turned = picture.rotate(start_angle + t * 360 / frames, resample=_BILINEAR)
        video[t, 0] = np.asarray(turned)[:size, :size]
    return video.astype(np.float32) / np.float32(255)


def rotating_videos(
    images: np.ndarray, start_angles: np.ndarray, frames: int = FRAMES, size: int = SIZE
) -> np.ndarray:
    """`rotating_video` of every image.

    images: uint8 `(N, H, W)`; start_angles: `(N,)` degrees.
    Returns float32 `(N, frames, 1, size, size)`.
    """
    out = np.empty((len(images), frames, 1, size, size), np.float32)
    for i, (image, angle) in enumerate(zip(images, start_angles, strict=True)):
        out[i] = rotating_video(image, float(angle), frames, size)
    return out


def start_angles(
    seed: int, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST
) -> tuple[np.ndarray, np.ndarray]:
    """The start angles in [0, 360) of the (training, test) videos: float64 `(num_train,)`,
    `(num_test,)`. Video i has the same angle for a seed whichever subset is loaded."""
    angles = np.random.default_rng(seed).uniform(0.0, 360.0, num_train + num_test)
    return angles[:num_train], angles[num_train:]


def _hint(folder: Path) -> str:
    names = ", ".join(f"{name}.gz" for name in MD5)
    return f"put the four official MNIST files {names} in {folder}"


def locate(root: Path, *, download: bool = True, progress: bool = True) -> list[Path]:
    """The four MNIST files under `root/mnist` (`.gz`, or already decompressed), downloaded
    from the official mirrors when missing and `download`."""
    folder = Path(root) / FOLDER
    files = []
    for name, md5 in MD5.items():
        found = [p for p in (folder / f"{name}.gz", folder / name) if p.is_file()]
        if found:
            files.append(found[0])
        elif download:
            urls = [f"{mirror}{name}.gz" for mirror in MIRRORS]
            checksum = Checksum("md5", md5)
            files.append(
                fetch(
                    urls,
                    folder / f"{name}.gz",
                    checksum,
                    hint=_hint(folder),
                    gunzip=True,
                    progress=progress,
                )
            )
        else:
            raise DataError(f"{folder / name}.gz is missing; {_hint(folder)} (or allow downloads)")
    return files


def read_idx(path: Path) -> tuple[np.ndarray, bool]:
    """An idx file (`.gz` or not) as a uint8 array, and whether its content is the official one."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
        if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 8 or data[3] not in (1, 3):
            raise ValueError("it does not start with an idx header of unsigned bytes")
        ndim = data[3]
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        if body.size != int(np.prod(dims)):
            raise ValueError(f"it holds {body.size} values instead of {int(np.prod(dims))}")
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as e:
        raise DataError(
            f"the MNIST file {path} is corrupt or truncated ({e}); "
            f"replace it with the official {name}.gz from {MIRRORS[0]}"
        ) from e
    return body.reshape(dims), digest_bytes(data) == MD5.get(name)


def read(files: list[Path]) -> dict[str, np.ndarray]:
    """Images uint8 `(N, 28, 28)` and labels int64 `(N,)` of both parts, checked."""
    arrays, differ = {}, []
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    for key, path in zip(keys, files, strict=True):
        arrays[key], official = read_idx(path)
        if not official:
            differ.append(path.name)
    if differ:
        warn_once(
            f"mnist:{files[0].parent}",
            f"MNIST files in {files[0].parent} differ from the official ones "
            f"({', '.join(differ)}); using them as they are",
        )
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"the MNIST {part} files in {files[0].parent} do not match: "
                f"{images.shape} images and {labels.shape} labels"
            )
        if labels.max(initial=0) >= NUM_CLASSES:
            raise DataError(f"the MNIST {part} labels in {files[0].parent} go beyond 9")
        arrays[f"{part}_labels"] = labels.astype(np.int64)
    return arrays


def generate(files: list[Path], writer: CacheWriter, request: Request) -> dict[str, Any]:
    """Write `train_videos`, `train_labels`, `test_videos`, `test_labels` into `writer`."""
    data = read(files)
    angles = start_angles(request.seed, len(data["train_images"]), len(data["test_images"]))
    for part_id, part in enumerate(("train", "test")):
        images, labels = data[f"{part}_images"], data[f"{part}_labels"]
        size = request.size(part)
        index = subset_index(len(images), size, request.seed, part_id)
        writer.create(f"{part}_videos", (len(index), FRAMES, 1, SIZE, SIZE))
        writer.save(f"{part}_labels", labels[index])
        tasks = []
        for start in range(0, len(index), CHUNK):
            chunk = index[start : start + CHUNK]
            tasks.append((start, (images[chunk], angles[part_id][chunk])))
        fill(
            writer.path(f"{part}_videos"),
            rotating_videos,
            tasks,
            desc=f"{NAME} {part}",
            progress=request.progress,
        )
    return {"num_classes": NUM_CLASSES, "split": "random"}
