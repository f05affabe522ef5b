"""Scanned CIFAR-10: a 16x16 window slides over each 32x32 image in a vertical snake (METHOD.md 6).

With stride 8 the window takes 3x3 positions = 9 frames: down the first column of positions,
up the second, down the third. 50000 training and 10000 test videos of shape `(9, 3, 16, 16)`,
10 classes, ZCA-whitened (fitted on the training frames).
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .download import Checksum, check_local, fetch, safe_extract
from .errors import DataError
from .facts import Facts
from .request import Request
from .splits import subset_index
from .videocache import CacheWriter

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

NAME = "cifar10scanned"
VERSION = 1
WHITEN = True
SEEDED = False
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = Checksum("md5", "c58f30108f718f92721af3b95e74349a")
TRAIN_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST_MD5 = {"test_batch": "40351d587109b95175f43aff81a1287e"}
SIZE = 16
STRIDE = 8
NUM_CLASSES = 10
NUM_TRAIN = 50000
# 3 x 3 scan positions of a 16x16 window over a 32x32 image, stride 8
FACTS = Facts(NAME, (3, SIZE, SIZE), 9, NUM_CLASSES, "random", NUM_TRAIN, WHITEN)
CHUNK = 2000  # images per block


def scan_positions(height: int, width: int, size: int = SIZE, stride: int = STRIDE) -> list:
    """The window's top-left corners `(row, col)` in scan order: a vertical snake over columns."""
    rows = range(0, height - size + 1, stride)
    cols = range(0, width - size + 1, stride)
    order = []
    for c, col in enumerate(cols):
        for row in rows if c % 2 == 0 else reversed(rows):
            order.append((row, col))
    return order


def scanned_videos(images: np.ndarray, size: int = SIZE, stride: int = STRIDE) -> np.ndarray:
    """Scan uint8 `(N, C, H, W)` images into float32 `(N, frames, C, size, size)` in [0, 1]."""
    positions = scan_positions(images.shape[2], images.shape[3], size, stride)
    out = np.empty((len(images), len(positions), images.shape[1], size, size), np.float32)
    for t, (row, col) in enumerate(positions):
        out[:, t] = images[:, :, row : row + size, col : col + size]
    out /= np.float32(255)
    return out


def scanned_video(image: np.ndarray, size: int = SIZE, stride: int = STRIDE) -> np.ndarray:
    """A video of a window scanning `image`.

    image: uint8 `(H, W, C)`. The window (`size x size`, moved by `stride`) goes down the first
    column of positions, up the second, down the third, ...
    Returns float32 `(n_rows * n_cols, C, size, size)` in [0, 1] (9 frames for 32x32, 16, 8).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, C), got {image.dtype}{image.shape}")
    if not 1 <= size <= min(image.shape[:2]) or stride < 1:
        raise ValueError(f"size {size} and stride {stride} do not fit an image of {image.shape}")
    return scanned_videos(image.transpose(2, 0, 1)[None], size, stride)[0]


def _hint(root: Path) -> str:
    return f"put the official {ARCHIVE} or its unpacked {FOLDER} folder in {root}"


def locate(root: Path, *, download: bool = True, progress: bool = True) -> list[Path]:
    """The six batch files under `root/cifar-10-batches-py`, unpacked from `root/cifar-10-python
    .tar.gz` (downloaded when missing and `download`) if the folder is incomplete."""
    root = Path(root)
    folder = root / FOLDER
    names = [*TRAIN_MD5, *TEST_MD5]
    if not all((folder / n).is_file() for n in names):
        archive = root / ARCHIVE
        if archive.is_file():
            check_local([(archive, ARCHIVE_MD5)], "CIFAR-10", key=f"cifar:{root}")
        elif download:
            fetch([URL], archive, ARCHIVE_MD5, hint=_hint(root), progress=progress)
        else:
            raise DataError(f"CIFAR-10 is missing; {_hint(root)} (or allow downloads)")
        safe_extract(archive, root, progress=progress)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"the archive {archive} has no {', '.join(missing)}; {_hint(root)}")
    return [folder / n for n in names]


class _Unpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts, lists, numpy arrays) and nothing that could run code."""

    # The official batches only need numpy's array reconstruction; anything else is refused.

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # how Python 3 writes bytes in protocol 2
            return codecs.encode
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 `(N, 3, 32, 32)` and labels int64 `(N,)`."""
    try:
        with open(path, "rb") as f:
            batch = _Unpickler(f, encoding="latin1").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"its data is {data.dtype}{data.shape}, not uint8 (N, 3072)")
        if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise ValueError(f"its labels are not {len(data)} classes in 0-9")
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
    ) as e:
        raise DataError(
            f"the CIFAR-10 file {path} is corrupt or truncated ({e}); "
            f"replace it with the one in the official {ARCHIVE}"
        ) from e
    return data.reshape(-1, 3, 32, 32), labels


def read(files: list[Path]) -> dict[str, np.ndarray]:
    """Images uint8 `(N, 3, 32, 32)` and labels int64 `(N,)` of both parts (checksums checked)."""
    official = {**TRAIN_MD5, **TEST_MD5}
    checks = [(p, Checksum("md5", official[p.name])) for p in files]
    check_local(checks, "CIFAR-10", key=f"cifar:{files[0].parent.parent}")
    arrays = {}
    for part, names in (("train", TRAIN_MD5), ("test", TEST_MD5)):
        batches = [read_batch(p) for p in files if p.name in names]
        arrays[f"{part}_images"] = np.concatenate([b[0] for b in batches])
        arrays[f"{part}_labels"] = np.concatenate([b[1] for b in batches])
    return arrays


def generate(files: list[Path], writer: CacheWriter, request: Request) -> dict[str, Any]:
    """Write `train_videos`, `train_labels`, `test_videos`, `test_labels` into `writer`."""
    data = read(files)
    for part_id, part in enumerate(("train", "test")):
        images, labels = data[f"{part}_images"], data[f"{part}_labels"]
        index = subset_index(len(images), request.size(part), request.seed, part_id)
        frames = len(scan_positions(32, 32))
        out = writer.create(f"{part}_videos", (len(index), frames, 3, SIZE, SIZE))
        writer.save(f"{part}_labels", labels[index])
        for start in tqdm(
            range(0, len(index), CHUNK), desc=f"{NAME} {part}", disable=not request.progress
        ):
            out[start : start + CHUNK] = scanned_videos(images[index[start : start + CHUNK]])
    return {"num_classes": NUM_CLASSES, "split": "random"}
