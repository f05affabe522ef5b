"""Where datasets are read from and where generated videos are cached."""

from __future__ import annotations

import math
import os
import stat
import sys
from pathlib import Path

DATA_ENV = "GKSPARSE_DATA"
CACHE_ENV = "GKSPARSE_CACHE"
CACHE_LIMIT_ENV = "GKSPARSE_CACHE_GB"
DEFAULT_CACHE_LIMIT_GB = 20.0
UNBOUNDED = ("none", "inf", "unbounded")  # the words for "no limit"
DEFAULT_ROOT = Path("~/.cache/gksparse")
_NOTED: set[Path] = set()  # read-only data roots already mentioned


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: `data_dir`, else `$GKSPARSE_DATA`, else `~/.cache/gksparse`."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_ENV) or DEFAULT_ROOT
    return Path(data_dir).expanduser().absolute()


def is_writable(path: Path) -> bool:
    """Whether files may be created in the folder `path` (or in its nearest existing parent).

    A folder without any write bit counts as read-only even for root, who could write anyway:
    shared read-only copies (e.g. `../shared/data`) must never receive a cache.
    """
    path = Path(path)
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    mode = path.stat().st_mode
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(path, os.W_OK)


def cache_root(
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    note: bool = True,
) -> Path:
    """The cache folder for generated videos.

    `cache_dir`, else `$GKSPARSE_CACHE`, else `<data root>/cache`; when the data root is
    read-only (a shared copy), `~/.cache/gksparse/cache`, said once on stderr (`note`).
    """
    chosen = cache_dir or os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    root = data_root(data_dir)
    if is_writable(root / "cache"):
        return root / "cache"
    fallback = DEFAULT_ROOT.expanduser().absolute() / "cache"
    if note and root not in _NOTED:  # expected for a shared copy: a note, not a warning
        _NOTED.add(root)
        print(
            f"gksparse: the data root {root} is read-only, so generated videos are cached in "
            f"{fallback} (set {CACHE_ENV} to choose another folder)",
            file=sys.stderr,
        )
    return fallback


def cache_limit(limit_gb: float | str | None = None) -> float:
    """The size limit of a cache folder in bytes (1 GB = 10**9 bytes); `math.inf`: none.

    `limit_gb`, else `$GKSPARSE_CACHE_GB`, else 20 GB; `math.inf` or one of `UNBOUNDED`
    ("none", "inf") means no limit. Raises ValueError for 0, a negative value or no number.
    """
    source = "cache_limit_gb"
    if limit_gb is None:
        limit_gb, source = os.environ.get(CACHE_LIMIT_ENV, "").strip(), f"${CACHE_LIMIT_ENV}"
        if not limit_gb:
            return DEFAULT_CACHE_LIMIT_GB * 1e9
    hint = "a number of GB, or 'none' for no limit"
    if isinstance(limit_gb, str):
        if limit_gb.strip().lower() in UNBOUNDED:
            return math.inf
        try:
            value = float(limit_gb)
        except ValueError:
            raise ValueError(f"{source} must be {hint}, got {limit_gb!r}") from None
    elif isinstance(limit_gb, (int, float)) and not isinstance(limit_gb, bool):
        value = float(limit_gb)
    else:
        raise ValueError(f"{source} must be {hint}, got {limit_gb!r}")
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{source} must be more than 0 ({hint}), got {limit_gb!r}")
    return value * 1e9
