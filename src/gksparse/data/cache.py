"""On-disk cache of generated videos: one folder of `.npy` files per dataset, parameters and seed.

A cache entry is written into a hidden temporary folder next to its final place and renamed
into place only when every array is complete and synced, so a killed run never leaves a
half-written entry under a real name. Entries are read back as read-only memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from .errors import DataError, DataWarning

META = "meta.json"
TMP_PREFIX = ".tmp-"


def entry_dir(cache: Path, dataset: str, params: dict[str, Any], label: str = "") -> Path:
    """The folder of the entry for `params` (JSON-able) under `cache/dataset/`."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache) / dataset / (f"{label}-{key}" if label else key)


def read_entry(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and metadata of a complete entry, or None when there is none.

    Arrays listed with `"mmap": true` are read-only memory maps, others are loaded. A damaged
    entry (a truncated or missing file) is removed with a warning and None is returned.
    """
    path = Path(path)
    if not (path / META).is_file():
        return None
    try:
        meta = json.loads((path / META).read_text())
        arrays = {}
        for name, spec in meta["arrays"].items():
            array = np.load(path / f"{name}.npy", mmap_mode="r" if spec["mmap"] else None)
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise ValueError(f"{name}.npy is {array.dtype}{array.shape}, expected {spec}")
            arrays[name] = array
        return arrays, meta
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        warnings.warn(
            f"the cached videos in {path} are damaged ({e}); generating them again",
            DataWarning,
            stacklevel=2,
        )
        _remove(path)
        return None


class CacheWriter:
    """Writes one entry into a temporary folder; `commit` renames it into place.

    Use as a context manager: on an exception the temporary folder is removed, otherwise the
    entry is committed. Big arrays are created as writable memory maps (`create`) that the
    generator (and worker processes, via `path`) fill in place.
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(
                f"cannot create the cache folder {self.final.parent} ({e}); "
                "set GKSPARSE_CACHE or cache_dir to a writable folder"
            ) from e
        _remove_stale(self.final.parent)
        host = socket.gethostname().replace("-", "_")
        name = f"{TMP_PREFIX}{self.final.name}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = self.final.parent / name
        self.tmp.mkdir()
        self.meta: dict[str, Any] = {"arrays": {}}
        self._maps: dict[str, np.memmap] = {}

    def path(self, name: str) -> Path:
        """The file of array `name` (for workers that open it themselves with mode 'r+')."""
        return self.tmp / f"{name}.npy"

    def create(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.memmap:
        """A zero-filled writable memory map for array `name`, read back as a memory map."""
        array = open_memmap(self.path(name), mode="w+", dtype=dtype, shape=tuple(shape))
        self._maps[name] = array
        self.meta["arrays"][name] = {"shape": list(shape), "dtype": str(array.dtype), "mmap": True}
        return array

    def save(self, name: str, array: np.ndarray) -> None:
        """Store a small array, read back into memory."""
        array = np.ascontiguousarray(array)
        np.save(self.path(name), array)
        self.meta["arrays"][name] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "mmap": False,
        }

    def array(self, name: str) -> np.ndarray:
        """Array `name` as written so far (a writable memory map for those made by `create`)."""
        if name in self._maps:
            return self._maps[name]
        return np.load(self.path(name))

    def commit(self) -> Path:
        """Sync every file, write the metadata last, and rename the folder into place."""
        for array in self._maps.values():
            array.flush()
        self._maps.clear()
        for file in self.tmp.iterdir():
            _fsync(file)
        with open(self.tmp / META, "w") as f:
            json.dump(self.meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync(self.tmp)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if read_entry(self.final) is None:  # not a finished entry from a concurrent run
                raise
            _remove(self.tmp)  # another process finished the same entry first: use theirs
        _fsync(self.final.parent)
        return self.final

    def abort(self) -> None:
        """Drop the temporary folder."""
        self._maps.clear()
        _remove(self.tmp)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def remove_entry(path: Path) -> None:
    """Remove an entry (renamed aside first, so that nothing reads it half-deleted)."""
    _remove(Path(path))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a folder; first renamed aside so that nothing reads it half-deleted."""
    if not path.exists():
        return
    aside = path.with_name(f"{TMP_PREFIX}removed-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        os.rename(path, aside)
    except OSError:
        aside = path
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale(folder: Path) -> None:
    """Remove temporary folders left by killed runs of this host (their process is gone)."""
    host = socket.gethostname().replace("-", "_")
    for tmp in folder.glob(f"{TMP_PREFIX}*"):
        if tmp.name.startswith(f"{TMP_PREFIX}removed-"):
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        parts = tmp.name.rsplit("-", 3)
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
            continue
        if not _alive(int(parts[2])):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
