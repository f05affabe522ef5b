"""Downloads with checksums, checks of local copies, and archive unpacking that stays in its folder.

Rules (see `fetch`, `check_local`, `safe_extract`):
- a download is written to a `.part` file, checked, and only then renamed into place; one that
  does not match its official checksum is deleted and rejected;
- a local copy whose checksum differs from the official one is used, with one warning
  (re-encoded copies exist);
- an archive member that would land outside the target folder, or that is a link or a device,
  stops the unpacking before anything is written.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm.auto import tqdm

from .errors import DataError, DataWarning
from .paths import is_writable

TIMEOUT_S = 60
CHUNK = 1 << 20
_warned: set[str] = set()


@dataclass(frozen=True)
class Checksum:
    """An official checksum: `algorithm` is a `hashlib` name ('md5', 'sha256')."""

    algorithm: str
    digest: str


def digest_bytes(data: bytes, algorithm: str = "md5") -> str:
    """Hex digest of `data`."""
    return hashlib.new(algorithm, data).hexdigest()


def digest_file(path: Path, algorithm: str = "md5", *, gunzip: bool = False) -> str:
    """Hex digest of a file, or of its decompressed content when `gunzip` (raises on bad gzip)."""
    h = hashlib.new(algorithm)
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def warn_once(key: str, message: str) -> None:
    """Warn with `message` the first time `key` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, DataWarning, stacklevel=3)


def check_local(
    files: Iterable[tuple[Path, Checksum]],
    what: str,
    *,
    gunzip: bool = False,
    key: str | None = None,
) -> list[str]:
    """Compare local files with their official checksums; warn once if any differ.

    key: warnings with the same key are given once (default: `what` and the files' folder).
    Returns the names of the files that differ (they are used anyway).
    """
    files = list(files)
    differ = [p.name for p, c in files if digest_file(p, c.algorithm, gunzip=gunzip) != c.digest]
    if differ:
        folder = files[0][0].parent
        warn_once(
            key or f"{what}:{folder}",
            f"{what} files in {folder} differ from the official ones ({', '.join(differ)}); "
            "using them as they are",
        )
    return differ


def fetch(
    urls: Sequence[str],
    dest: Path,
    checksum: Checksum | None,
    *,
    hint: str,
    gunzip: bool = False,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download the first of `urls` that works into `dest`, verified.

    checksum: the official checksum of the file (of its decompressed content when `gunzip`),
        or None when none is known. size: the official size in bytes, checked when given.
    hint: the end of the error sentence, saying which files to put where.
    Raises DataError when every address fails or no download matches; a download that does not
    match is deleted.
    """
    dest = Path(dest)
    if not is_writable(dest.parent):
        raise DataError(f"{dest.parent} is read-only, so {dest.name} cannot be downloaded; {hint}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest.parent} to download into ({e}); {hint}") from e
    reasons = []
    for url in urls:
        part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
        try:
            got_size = _download(url, part, progress)
            problem = _mismatch(part, checksum, gunzip, size, got_size)
            if problem is None:
                os.replace(part, dest)
                return dest
            reasons.append(f"{url} does not match: {problem}, so it was deleted")
        except (urllib.error.URLError, OSError, ValueError) as e:
            reasons.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            part.unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name} ({'; '.join(reasons)}); {hint}")


def _download(url: str, part: Path, progress: bool) -> int:
    """Stream `url` into `part`; returns the number of bytes written."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
        total = response.headers.get("Content-Length")
        bar = tqdm(
            total=int(total) if total else None,
            unit="B",
            unit_scale=True,
            desc=f"download {PurePosixPath(url).name}",
            disable=not progress,
        )
        written = 0
        with bar:
            while block := response.read(CHUNK):
                out.write(block)
                written += len(block)
                bar.update(len(block))
    return written


def _mismatch(
    path: Path, checksum: Checksum | None, gunzip: bool, size: int | None, got_size: int
) -> str | None:
    """Why a downloaded file is not the official one, or None when it is."""
    if size is not None and got_size != size:
        return f"{got_size} bytes instead of {size}"
    if checksum is None:
        return None
    try:
        got = digest_file(path, checksum.algorithm, gunzip=gunzip)
    except (OSError, EOFError, zlib.error) as e:
        return f"it cannot be decompressed ({e})"
    if got != checksum.digest:
        return f"{checksum.algorithm} {got} instead of {checksum.digest}"
    return None


def safe_extract(archive: Path, target: Path, *, progress: bool = True) -> None:
    """Unpack a `.tar`, `.tar.gz` or `.zip` archive into the folder `target`.

    Every member is checked before anything is written: absolute names, names that leave
    `target` (`..`), links and special files are refused with a DataError. Members are
    unpacked into a hidden staging folder inside `target` first, then moved into place, so a
    killed run leaves no half-unpacked folder under its real name.
    """
    archive, target = Path(archive), Path(target)
    if not is_writable(target):
        raise DataError(
            f"{target} is read-only, so {archive} cannot be unpacked; unpack it yourself"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target))
    except OSError as e:
        raise DataError(f"cannot unpack {archive} into {target} ({e}); unpack it yourself") from e
    try:
        try:
            with _open_archive(archive) as members:
                for name, kind, _ in members:
                    _check_member(archive, target, staging, name, kind)
                for name, kind, open_member in tqdm(
                    members, desc=f"unpack {archive.name}", unit="file", disable=not progress
                ):
                    dest = staging / name
                    if kind == "dir":
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with open_member() as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DataError(
                f"the archive {archive} is corrupt or truncated ({e}); delete it and get it again"
            ) from e
        _merge(staging, target)
    except OSError as e:
        raise DataError(f"cannot unpack {archive} into {target} ({e}); unpack it yourself") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _open_archive(archive: Path) -> Iterator[list[tuple[str, str, Callable[[], IO[bytes]]]]]:
    """The members of an open archive as (name, kind, opener); kind is 'file', 'dir' or 'other'."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            members = []
            for info in zf.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                kind = "dir" if info.is_dir() else ("other" if is_link else "file")
                members.append((info.filename, kind, partial(zf.open, info)))
            yield members
        return
    with tarfile.open(archive) as tf:
        members = []
        for m in tf.getmembers():
            kind = "dir" if m.isdir() else ("file" if m.isfile() else "other")
            members.append((m.name, kind, partial(tf.extractfile, m)))
        yield members


def _check_member(archive: Path, target: Path, staging: Path, name: str, kind: str) -> None:
    """Refuse a member that is not a plain file or folder inside the staging folder."""
    if kind == "other":
        raise DataError(
            f"the archive {archive} has a link or special member {name!r}, so it was not "
            "unpacked; delete it and get the official file"
        )
    inside = staging.resolve()
    dest = (staging / name).resolve()
    escapes = name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
    if escapes or not (dest == inside or inside in dest.parents):
        raise DataError(
            f"the archive {archive} has a member {name!r} that would be written outside "
            f"{target}, so it was not unpacked; delete it and get the official file"
        )


def _merge(staging: Path, target: Path) -> None:
    """Move every file under `staging` to the same place under `target` (replacing files)."""
    for path in sorted(staging.rglob("*")):
        if path.is_dir():
            (target / path.relative_to(staging)).mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.rglob("*")):
        if not path.is_dir():
            os.replace(path, target / path.relative_to(staging))
