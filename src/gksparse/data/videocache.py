"""On-disk cache of generated videos: one folder of `.npy` files per dataset, parameters and seed.

A cache entry is written into a hidden temporary folder next to its final place and renamed
into place only when every array is complete and synced, so a killed run never leaves a
half-written entry under a real name. Entries are read back as read-only memory maps.
Every array's file gets a checksum when the entry is committed (`checksums`), checked on every
read: an entry whose files changed since is damaged, removed and generated again.

A cache folder has a size limit (`paths.cache_limit`): `load` marks every entry it reads or
writes as used (`mark_used`) and then removes the least recently used other entries until the
total fits (`evict`). `list_entries` and `clear` serve `python -m gksparse.cache`. The space
of every memory map is reserved when it is created, so a full disk is one `DataError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from .checksums import SCHEME, file_checksum
from .checksums import check as check_checksums
from .download import warn_once
from .errors import DataError, DataWarning
from .paths import CACHE_ENV, CACHE_LIMIT_ENV

META = "meta.json"
TMP_PREFIX = ".tmp-"
_ENTRY_NAME = re.compile(r"(?:(?P<label>.+)-)?[0-9a-f]{16}")  # what `entry_dir` names
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class Entry:
    """A complete cache entry: its folder, dataset, label, size in bytes and last use."""

    path: Path
    dataset: str
    label: str
    size: int
    last_used: float  # seconds since the epoch: meta.json's modification time (`mark_used`)


def entry_dir(cache: Path, dataset: str, params: dict[str, Any], label: str = "") -> Path:
    """The folder of the entry for `params` (JSON-able) under `cache/dataset/`."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache) / dataset / (f"{label}-{key}" if label else key)


def read_entry(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and metadata of a complete entry, or None when there is none.

    Arrays listed with `"mmap": true` are read-only memory maps, others are loaded. Every
    file is checked against the checksum recorded when the entry was written (all of its bytes
    are read and hashed, `checksums`: 1.5 to 2.5 s per GB on a busy 2-core machine). A damaged
    entry (a missing, truncated or changed file) is removed with a warning and None is
    returned; so is an entry written before entries had checksums.
    """
    path = Path(path)
    if not (path / META).is_file():
        return None
    try:
        meta = json.loads((path / META).read_text())
        if "checksum" not in meta:
            # Written before entries had checksums: generated again once, not given checksums
            # of its bytes as they are now, which would make any damage already there pass.
            warnings.warn(
                f"the cached videos in {path} have no checksums (written by an older gksparse), "
                "so they cannot be verified; generating them again",
                DataWarning,
                stacklevel=2,
            )
            _remove(path)
            return None
        arrays = {}
        for name, spec in meta["arrays"].items():
            array = np.load(path / f"{name}.npy", mmap_mode="r" if spec["mmap"] else None)
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise ValueError(f"{name}.npy is {array.dtype}{array.shape}, expected {spec}")
            arrays[name] = array
        check_checksums(path, meta)
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
        self.meta: dict[str, Any] = {"arrays": {}}
        self._maps: dict[str, np.memmap] = {}
        self._needed = 0  # bytes of the arrays created or saved so far
        with self._space():
            self.tmp.mkdir()

    def path(self, name: str) -> Path:
        """The file of array `name` (for workers that open it themselves with mode 'r+')."""
        return self.tmp / f"{name}.npy"

    def create(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.memmap:
        """A zero-filled writable memory map for array `name`, read back as a memory map.

        Its disk space is reserved at once where the system can (`posix_fallocate`): on a full
        disk this raises a DataError, instead of a SIGBUS later in whichever process writes.
        """
        self._needed += math.prod(shape) * np.dtype(dtype).itemsize
        with self._space():
            array = open_memmap(self.path(name), mode="w+", dtype=dtype, shape=tuple(shape))
            _reserve(self.path(name))
        self._maps[name] = array
        self.meta["arrays"][name] = {"shape": list(shape), "dtype": str(array.dtype), "mmap": True}
        return array

    def save(self, name: str, array: np.ndarray) -> None:
        """Store a small array, read back into memory."""
        array = np.ascontiguousarray(array)
        self._needed += array.nbytes
        with self._space():
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
        """Sync every file, record each array's checksum (`checksums.file_checksum`) in the
        metadata, write the metadata last, and rename the folder into place."""
        with self._space():
            for array in self._maps.values():
                array.flush()
            self._maps.clear()
            for name, spec in self.meta["arrays"].items():
                spec["checksum"] = file_checksum(self.path(name))
            self.meta["checksum"] = dict(SCHEME)
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
            return
        self.abort()
        if _is_disk_full(value):  # a write of the generator itself, or of a worker process
            raise self._disk_full(value) from value

    @contextlib.contextmanager
    def _space(self) -> Iterator[None]:
        """Turn a full disk (ENOSPC, EDQUOT) into a DataError, dropping the temporary folder."""
        try:
            yield
        except OSError as e:
            if not _is_disk_full(e):
                raise
            self.abort()
            raise self._disk_full(e) from e

    def _disk_full(self, error: OSError) -> DataError:
        """The one sentence for a full disk: where, how much, and what to do."""
        root = self.final.parent.parent  # the cache folder: `root/dataset/entry`
        try:
            free = f"{format_size(shutil.disk_usage(self.final.parent).free)} are free"
        except OSError:
            free = "the free space is unknown"
        return DataError(
            f"the disk of the cache folder {root} is full ({os.strerror(error.errno)}): "
            f"this entry needs at least {format_size(self._needed)} and {free}; free space "
            "there, remove cached videos with `python -m gksparse.cache clear [DATASET ...]`, "
            f"or set {CACHE_ENV} to a folder on another disk"
        )


def remove_entry(path: Path) -> None:
    """Remove an entry (renamed aside first, so that nothing reads it half-deleted)."""
    _remove(Path(path))


def mark_used(path: Path) -> None:
    """Record that the entry at `path` is used now: the modification time of its meta.json.

    Not the filesystem's access time, which is often not kept (noatime, relatime). A cache
    that may not be written (a shared read-only copy) is left as it is.
    """
    try:
        os.utime(Path(path) / META)
    except OSError:
        pass


def list_entries(cache: Path, datasets: Iterable[str] | None = None) -> list[Entry]:
    """The complete entries under `cache` (only those of `datasets`, if given), by dataset.

    An entry is a folder `cache/<dataset>/<label>-<key>` (as `entry_dir` names it) holding a
    meta.json; its size is the sum of its files' sizes. Temporary folders of writers, and
    anything else in the folder, are neither listed nor counted.
    """
    wanted = None if datasets is None else set(datasets)
    entries = []
    for folder in _children(Path(cache)):
        if folder.name.startswith(".") or (wanted is not None and folder.name not in wanted):
            continue
        for path in _children(folder):
            match = _ENTRY_NAME.fullmatch(path.name)
            if match is None or path.name.startswith(TMP_PREFIX):
                continue
            try:
                last_used = (path / META).stat().st_mtime
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            except OSError:  # no meta.json (not complete), or removed meanwhile
                continue
            entries.append(Entry(path, folder.name, match["label"] or "", size, last_used))
    return entries


def evict(cache: Path, limit: float, keep: Path | None = None) -> list[Entry]:
    """Remove the least recently used entries until those under `cache` total `limit` bytes.

    `keep` (the entry `load` returns) is never removed; when it alone exceeds the limit, it
    is kept with one warning. Each removed entry is noted in one line on stderr. Returns the
    removed entries, least recently used first.
    """
    if math.isinf(limit):
        return []
    entries = list_entries(cache)
    keep = None if keep is None else Path(keep).resolve()
    total = sum(e.size for e in entries)
    removed = []
    for entry in sorted(entries, key=lambda e: (e.last_used, str(e.path))):
        if total <= limit:
            break
        if entry.path.resolve() == keep:
            continue
        _remove(entry.path)
        if entry.path.exists():  # a cache this process may not change
            continue
        total -= entry.size
        removed.append(entry)
        # A note, not a warning: removing entries is how a bounded cache works, not a fault.
        print(
            f"gksparse: removed the cached {entry.dataset} videos {describe(entry)} "
            f"({format_size(entry.size)}, last used {format_time(entry.last_used)}) to keep "
            f"{cache} within its limit of {format_size(limit)}",
            file=sys.stderr,
            flush=True,
        )
    own = next((e for e in entries if e.path.resolve() == keep), None)
    if own is not None and own.size > limit:
        warn_once(
            f"cache-limit:{own.path}",
            f"the cached {own.dataset} videos {describe(own)} ({format_size(own.size)}) alone "
            f"exceed the cache limit of {format_size(limit)}, so they are kept over the limit; "
            f"raise it with load(..., cache_limit_gb=...) or {CACHE_LIMIT_ENV} "
            "(e.g. GKSPARSE_CACHE_GB=50, or 'none' for no limit)",
        )
    return removed


def clear(cache: Path, datasets: Iterable[str] | None = None) -> list[Entry]:
    """Remove every entry under `cache` (only those of `datasets`, if given); returns them.

    Temporary folders left by killed writers of this host go too; those of live writers stay.
    """
    datasets = None if datasets is None else set(datasets)
    removed = []
    for entry in list_entries(cache, datasets):
        _remove(entry.path)
        if not entry.path.exists():
            removed.append(entry)
    for folder in _children(Path(cache)):
        if not folder.name.startswith(".") and (datasets is None or folder.name in datasets):
            _remove_stale(folder)
    return removed


def describe(entry: Entry) -> str:
    """The entry's label (its parameters in words), or its folder name when it has none."""
    return entry.label or entry.path.name


def format_size(size: float) -> str:
    """A size in bytes for people: '1.9 GB', '12.3 MB' (10**9 and 10**6 bytes), or 'none'."""
    if math.isinf(size):
        return "none"
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    return f"{size / 1e6:.1f} MB" if size >= 1e5 or size == 0 else "<0.1 MB"


def format_time(seconds: float) -> str:
    """A time since the epoch as local 'YYYY-MM-DD HH:MM'."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _children(folder: Path) -> list[Path]:
    """The subfolders of `folder` by name (none when it is missing or unreadable)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def _is_disk_full(error: BaseException | None) -> bool:
    return isinstance(error, OSError) and error.errno in _DISK_FULL


def _reserve(path: Path) -> None:
    """Allocate the blocks of the file `path` now, where the system and filesystem can.

    A memory map over unallocated blocks gets SIGBUS when the disk fills while it is written;
    reserved blocks make the full disk an ENOSPC here instead.
    """
    fallocate = getattr(os, "posix_fallocate", None)  # not on macOS or Windows
    size = path.stat().st_size
    if fallocate is None or size == 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, 0, size)
    except OSError as e:
        if _is_disk_full(e):
            raise
        # EINVAL, EOPNOTSUPP: a filesystem without preallocation; the writes will tell
    finally:
        os.close(fd)


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
