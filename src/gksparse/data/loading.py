"""`load`: a dataset's videos from its official files, generated once, then read from the cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import videos
from .catalog import MODULES, generated
from .containers import VideoData, Videos
from .errors import DataError
from .paths import cache_limit, cache_root, data_root
from .request import Request
from .videocache import CacheWriter, entry_dir, evict, mark_used, read_entry, remove_entry
from .zca import ZCA, fit_zca

DATASETS: tuple[str, ...] = generated()  # `load` also takes 'videos' (your own folder)


def _own_videos(
    folder: str | os.PathLike | None,
    zca: bool | None,
    zca_epsilon: float | None,
    cache_dir: str | os.PathLike | None,
    **options: Any,
) -> VideoData:
    """Your own folder of videos (`videos.load_folder`), whitened unless `zca=False`;
    `cache_dir`: where its clips are kept as memory maps (default: in memory)."""
    whiten = (videos.WHITEN and zca_epsilon is not None) if zca is None else bool(zca)
    return videos.load_folder(
        folder, zca=whiten, zca_epsilon=zca_epsilon, cache_dir=cache_dir, **options
    )


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    zca_epsilon: float | None = 1e-3,
    download: bool = True,
    progress: bool = True,
    zca: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_limit_gb: float | str | None = None,
    **options: Any,
) -> VideoData:
    """One of `DATASETS` as float32 videos `(N, T, C, H, W)`, with labels and labeled splits;
    or, for `name='videos'`, your own folder `data_dir` (`videos.load_folder`, which takes
    the `options`; whitened unless `zca=False`; `cache_dir`: where its clips are kept as
    memory maps, default memory).

    data_dir: the data root (default `$GKSPARSE_DATA`, else `~/.cache/gksparse`), holding the
        official layouts: `mnist/`, `cifar-10-batches-py/` (or `cifar-10-python.tar.gz`),
        `coil-100/` (or `coil-100.zip`), `necanimal/`.
    train_size, test_size: a deterministic random subset of that many videos (per `seed`);
        for coil100 and necanimal, whose test videos are the training videos, `train_size`
        picks the videos and the test set is the first `test_size` of them.
    seed: drives the random parts of generation (Rotated MNIST's start angles, so each seed is
        its own cache entry there) and the subsets.
    zca_epsilon: the whitening's regulariser (None: no whitening, as in the reference).
    zca: whiten or not; default per METHOD.md (all but mnistrotated). The whitening is fitted
        on the training videos' real frames and applied to all; it is `VideoData.zca`.
    download: fetch missing MNIST, CIFAR-10 or COIL-100 files from their official addresses.
    progress: show progress bars.
    cache_dir: where generated videos are cached (default `$GKSPARSE_CACHE`, else
        `<data root>/cache`, or `~/.cache/gksparse/cache` when the data root is read-only).
    cache_limit_gb: the most that the entries of that cache folder may hold together, in GB
        (default `$GKSPARSE_CACHE_GB`, else 20; `math.inf` or "none": no limit). After this
        entry is read or written, the least recently used other entries are removed until
        the total fits; this one is kept even when it alone is larger (with a warning).

    Videos are read-only memory maps of the cache. Raises ValueError for an unknown name or a
    limit of 0 or less, and DataError when files are missing or corrupt, or the disk is full.
    """
    if name == videos.NAME:
        sizes = dict(train_size=train_size, test_size=test_size, seed=seed, progress=progress)
        return _own_videos(data_dir, zca, zca_epsilon, cache_dir, **sizes, **options)
    if name not in generated():
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(generated())}")
    if options:
        raise ValueError(f"{name} takes no options {sorted(options)}: they are for 'videos'.")
    for what, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and size < 1:
            raise ValueError(f"{what} must be at least 1 (or None for all videos), got {size}")
    limit = cache_limit(cache_limit_gb)  # refused before any download or generation
    module = MODULES[name]
    whiten = (module.WHITEN and zca_epsilon is not None) if zca is None else bool(zca)
    if whiten and zca_epsilon is None:
        raise ValueError("zca=True needs a zca_epsilon (the reference's default is 1e-3)")
    root = data_root(data_dir)
    files = module.locate(root, download=download, progress=progress)
    subset = train_size is not None or test_size is not None
    params = {
        "root": str(root),
        "version": module.VERSION,
        "seed": seed if (module.SEEDED or subset) else None,
        "train_size": train_size,
        "test_size": test_size,
        "zca_epsilon": float(zca_epsilon) if whiten else None,
    }
    label = "-".join(
        [f"seed{params['seed']}" if params["seed"] is not None else "all"]
        + [f"train{train_size}"] * (train_size is not None)
        + [f"test{test_size}"] * (test_size is not None)
        + ["zca"] * whiten
    )
    cache = cache_root(cache_dir, root)
    entry = entry_dir(cache, name, params, label)
    source = _fingerprint(files, root)
    found = read_entry(entry)
    if found is None or found[1].get("source") != source:
        remove_entry(entry)  # the dataset's files changed since, or a folder without meta.json
        found = None
    if found is None:
        with CacheWriter(entry) as writer:
            writer.meta.update(params=params, source=source)
            writer.meta.update(
                module.generate(files, writer, Request(train_size, test_size, seed, progress))
            )
            if whiten:
                _whiten(writer, zca_epsilon, progress)
        found = read_entry(entry)
        if found is None:
            raise DataError(f"the cache entry {entry} could not be read back; delete it and retry")
    mark_used(entry)
    evict(cache, limit, keep=entry)
    return _assemble(name, *found)


def _whiten(writer: CacheWriter, epsilon: float, progress: bool) -> None:
    """Fit a ZCA on the training videos' real frames; whiten every video in place."""
    train = writer.array("train_videos")
    mask = writer.array("train_mask") if "train_mask" in writer.meta["arrays"] else None
    zca = fit_zca(train, mask, epsilon, progress=progress)
    zca.apply(train, mask, out=train, progress=progress)
    if "test_videos" in writer.meta["arrays"]:
        test = writer.array("test_videos")
        test_mask = writer.array("test_mask") if "test_mask" in writer.meta["arrays"] else None
        zca.apply(test, test_mask, out=test, progress=progress)
    writer.save("zca_mean", zca.mean)
    writer.save("zca_matrix", zca.matrix)
    writer.meta["zca_epsilon"] = float(epsilon)


def _fingerprint(files: list[Path], root: Path) -> str:
    """A cheap identity of the source files (names, sizes, modification times)."""
    h = hashlib.sha256()
    for path in files:
        st = path.stat()
        try:
            shown = path.relative_to(root)
        except ValueError:
            shown = path
        h.update(f"{shown}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _assemble(name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> VideoData:
    def part(prefix: str) -> Videos:
        return Videos(
            arrays[f"{prefix}_videos"], arrays.get(f"{prefix}_labels"), arrays.get(f"{prefix}_mask")
        )

    train = part("train")
    if meta.get("test_from_train") is not None:
        k = int(meta["test_from_train"])
        test = Videos(
            train.videos[:k],
            None if train.labels is None else train.labels[:k],
            None if train.mask is None else train.mask[:k],
        )
    else:
        test = part("test")
    zca = None
    if "zca_matrix" in arrays:
        zca = ZCA(arrays["zca_mean"], arrays["zca_matrix"], float(meta["zca_epsilon"]))
    return VideoData(train, test, int(meta["num_classes"]), name=name, split=meta["split"], zca=zca)
