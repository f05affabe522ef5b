"""List or clear the videos that `gksparse.data.load` cached (`gksparse.data.videocache`).

    python -m gksparse.cache list [--cache-dir DIR]
    python -m gksparse.cache clear [DATASET ...] [--cache-dir DIR]

`list` prints one line per entry (dataset, label, size, last use), then the total and the
limit; `clear` removes every entry, or those of the named datasets. The default folder is the
one `load` uses: `$GKSPARSE_CACHE`, else `<data root>/cache`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .data.catalog import generated
from .data.paths import CACHE_LIMIT_ENV, DEFAULT_CACHE_LIMIT_GB, cache_limit, cache_root
from .data.videocache import clear, describe, format_size, format_time, list_entries


class _BadInput(Exception):
    """Input this command refuses with one sentence and exit code 2."""


def main(argv: list[str] | None = None) -> int:
    """Run the command with `argv` (default: the command line); returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m gksparse.cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the cache folder (default: $GKSPARSE_CACHE, else <data root>/cache, as load uses)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,clear}")
    commands.add_parser("list", parents=[common], help="one line per entry, then the total")
    remove = commands.add_parser(
        "clear", parents=[common], help="remove all entries, or those of the named datasets"
    )
    remove.add_argument("datasets", nargs="*", metavar="DATASET", help="e.g. mnistrotated")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already explained
        return e.code if isinstance(e.code, int) else 2
    try:
        cache = _folder(args.cache_dir)
        if args.command == "list":
            _list(cache)
        else:
            _clear(cache, args.datasets)
    except (_BadInput, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _folder(cache_dir: str | None) -> Path:
    """The cache folder: the one given (which must exist), else the one `load` uses."""
    if cache_dir is None:
        return cache_root(note=False)  # the folder is shown anyway
    folder = Path(cache_dir).expanduser().absolute()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise _BadInput(f"the cache folder {folder} {what}")
    return folder


def _list(cache: Path) -> None:
    limit = cache_limit()
    entries = list_entries(cache)
    width = max((len(e.dataset) for e in entries), default=0)
    label_width = max((len(describe(e)) for e in entries), default=0)
    for e in entries:
        print(
            f"{e.dataset:<{width}}  {describe(e):<{label_width}}  {format_size(e.size):>8}  "
            f"last used {format_time(e.last_used)}"
        )
    total = sum(e.size for e in entries)
    source = (
        f"from ${CACHE_LIMIT_ENV}"
        if os.environ.get(CACHE_LIMIT_ENV, "").strip()
        else f"the default of {DEFAULT_CACHE_LIMIT_GB:g} GB; set ${CACHE_LIMIT_ENV} to change it"
    )
    count = f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}"
    print(f"{count} in {cache}: {format_size(total)} in all, limit {format_size(limit)} ({source})")


def _clear(cache: Path, datasets: list[str]) -> None:
    known = set(generated()) | {e.dataset for e in list_entries(cache)}
    for name in datasets:
        if name not in known:
            raise _BadInput(f"unknown dataset {name!r}: choose from {', '.join(generated())}")
    removed = clear(cache, datasets or None)
    for e in removed:
        print(f"removed {e.dataset} {describe(e)} ({format_size(e.size)})")
    count = f"{len(removed)} {'entry' if len(removed) == 1 else 'entries'}"
    total = format_size(sum(e.size for e in removed))
    print(f"removed {count} ({total}) from {cache}")


if __name__ == "__main__":
    raise SystemExit(main())
