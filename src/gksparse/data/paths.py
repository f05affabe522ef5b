"""Where datasets are read from and where generated videos are cached."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from .errors import DataWarning

DATA_ENV = "GKSPARSE_DATA"
CACHE_ENV = "GKSPARSE_CACHE"
DEFAULT_ROOT = Path("~/.cache/gksparse")


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
    cache_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> Path:
    """The cache folder for generated videos.

    `cache_dir`, else `$GKSPARSE_CACHE`, else `<data root>/cache`; when the data root is
    read-only (a shared copy), `~/.cache/gksparse/cache` with a warning.
    """
    chosen = cache_dir or os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    root = data_root(data_dir)
    if is_writable(root / "cache"):
        return root / "cache"
    fallback = DEFAULT_ROOT.expanduser().absolute() / "cache"
    warnings.warn(
        f"the data root {root} is read-only, so generated videos are cached in {fallback} "
        f"(set {CACHE_ENV} or cache_dir to choose another folder)",
        DataWarning,
        stacklevel=2,
    )
    return fallback
