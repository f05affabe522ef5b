"""Files of a run folder, written atomically: a temporary file beside the target, then rename.

A reader never sees a half-written file, a killed writer leaves at most a `.<name>.*.tmp`
file (removed by `remove_temporary_files` on the next resume), files get the mode the umask
gives (0644 under umask 022, where `mkstemp` alone would give 0600), and a full disk is one
sentence naming the folder instead of a library's error from deep inside.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
LOCK = ".lock"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_HELD: dict[Path, int] = {}  # folders this process holds: their lock files' descriptors


def natural_key(name: str) -> list[str | int]:
    """Sort key that reads digit runs as numbers: 'f2' before 'f10', run 2 before run 10."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


class NoSpaceError(OSError):
    """The disk (or the quota) of a folder is full."""

    def __str__(self) -> str:
        return str(self.strerror)


def umask_mode() -> int:
    """The mode a new file gets under the current umask (e.g. 0o644 under 0o022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically, with the umask's mode, synced before the rename."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        raise _explain(e, path) from e
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _explain(e, path) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(obj: Any, path: str | os.PathLike, **dump_options: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, **dump_options))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically (serialised in memory first, so that a full
    disk is an OSError of the write, not an error from inside torch's zip writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    import torch  # here: the records' readers (the report) need no torch

    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer().tobytes())


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the `.<name>.*.tmp` files that killed writers left in `folder`; returns them.

    Call it only while holding the folder (a run's lock): a live writer's file looks the same.
    """
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class FolderInUse(OSError):
    """Another process holds the run folder."""

    def __str__(self) -> str:
        return str(self.strerror)


def hold_folder(folder: str | os.PathLike) -> None:
    """Make this process the only writer of `folder` until it exits (or `release_folder`).

    An advisory lock (`flock`) on `<folder>/.lock`, which holds the holder's pid; the system
    drops it when the process ends, however it ends. Holding a folder twice is a no-op.
    Raises `FolderInUse` (one sentence) when another process holds it.
    """
    folder = Path(folder).absolute()
    if folder in _HELD:
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, umask_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUse(
            errno.EBUSY,
            f"the run folder {folder} is in use by another process (pid {holder}); wait for "
            "it to end (or stop it) before resuming this run",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[folder] = fd


def holder(folder: str | os.PathLike) -> int | None:
    """The pid of another process holding `folder` (see `hold_folder`), or None: the folder
    is free (or this process holds it)."""
    folder = Path(folder).absolute()
    lock = folder / LOCK
    if folder in _HELD or not lock.is_file():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken
    return None


def release_folder(folder: str | os.PathLike) -> None:
    """Let other processes write `folder` again (if this process holds it)."""
    fd = _HELD.pop(Path(folder).absolute(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor of the lock drops it


def _explain(e: OSError, path: Path) -> OSError:
    """One sentence for a full disk; other errors as they are."""
    if e.errno in _NO_SPACE:
        return NoSpaceError(
            e.errno,
            f"no space left in {path.parent} to write {path.name}; free some space there, "
            "then resume the run",
        )
    return e
