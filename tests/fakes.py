"""Small folders in the official COIL-100 and NEC Animal layouts, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def coil_image(obj: int, angle: int, size: int = 128) -> np.ndarray:
    """A recognisable uint8 `(size, size, 3)` picture of object `obj` at pose `angle`."""
    rng = np.random.default_rng(obj * 1000 + angle)
    y, x = np.mgrid[0:size, 0:size]
    base = (obj * 37 + x * (1 + angle // 5) // 4 + y) % 256
    noise = rng.integers(0, 40, (size, size, 3))
    return ((base[..., None] + noise + np.array([0, 60, 120])) % 256).astype(np.uint8)


def write_coil(root: Path, objects: tuple[int, ...] = (1, 2, 3), size: int = 128) -> Path:
    """`root/coil-100/obj{i}__{angle}.png` for the given objects, 72 poses each."""
    folder = root / "coil-100"
    folder.mkdir(parents=True)
    for obj in objects:
        for angle in range(0, 360, 5):
            Image.fromarray(coil_image(obj, angle, size)).save(folder / f"obj{obj}__{angle}.png")
    return folder


def nec_frame(number: int) -> np.ndarray:
    """A uint8 `(40, 48, 3)` frame (not square, as a camera's)."""
    rng = np.random.default_rng(number)
    return rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)


def write_nec(root: Path, bounds=((1, 5), (6, 13), (14, 16)), last_end: str | None = None) -> Path:
    """`root/necanimal/` with `img_clean/imgNNNN.jpg` and `seq_ref_clean.txt` (4 header lines).

    last_end: what the index says as the last sequence's end (default: its true end).
    """
    folder = root / "necanimal"
    (folder / "img_clean").mkdir(parents=True)
    for start, end in bounds:
        for number in range(start, end + 1):
            path = folder / "img_clean" / f"img{number:04d}.jpg"
            Image.fromarray(nec_frame(number)).save(path, quality=95)
    lines = ["NEC Animal sequences", "clean frames", "start end", "----"]
    lines += [f"{a} {b}" for a, b in bounds[:-1]]
    a, b = bounds[-1]
    lines.append(f"{a} {b if last_end is None else last_end}".strip())
    (folder / "seq_ref_clean.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return folder


def add_dataset(monkeypatch, name: str, labeled: tuple[str, int, int] | None = None) -> None:
    """Add dataset `name` to the one table of datasets (`gksparse.data.catalog`) for a test:
    `labeled` is its (kind, training videos, classes), None: no labeled split of its own."""
    from gksparse.data import catalog
    from gksparse.data.facts import Facts

    kind, pool, classes = labeled or (None, None, None)
    facts = Facts(name, None, None, classes, kind, pool, whiten=False, generated=False)
    monkeypatch.setitem(catalog.CATALOG, name, facts)
