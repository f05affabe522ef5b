"""What happens to each cell: its whole config (asked of its experiment script), the run
folders of the same settings already in the results folder, and so run, resume or skip.

A cell's runs are the run folders `<results>/<dataset>/<id>` whose config equals the cell's
on every key that changes results (`config.RUNTIME_KEYS` aside; a key a run's config lacks,
being older, counts as its default). One COMPLETED such run: skip. One that failed, was
interrupted or died: resume the newest. One in use by another process, or a cell locked by
another sweep: busy, left to whoever holds it. None: run.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol import commandline
from ..protocol.config import RUNTIME_KEYS, defaults
from ..protocol.rundir.folder import RunFolder
from ..protocol.rundir.records import RecordError
from ..protocol.rundir.runs import numbered_runs
from .grid import Cell, GridError

SWEEP_DIR = "_sweep"  # <results>/_sweep: the cells' locks and logs
RUN, RESUME, SKIP, BUSY = "run", "resume", "skip", "busy"
_MISSING = object()


@dataclass(frozen=True)
class Plan:
    """A cell, its resolved config and what to do: `action` with the run `folder` it acts on
    (None for a new run) and `why` (the folder's status, or who holds it)."""

    cell: Cell
    config: dict[str, Any]
    action: str
    folder: Path | None = None
    why: str = ""


def resolve(cells: list[Cell], results: Path) -> list[dict[str, Any]]:
    """Every cell's whole config, as `python -m gksparse.run` would run it; a `GridError`
    naming the first cell whose settings cannot run."""
    configs: list[dict[str, Any] | None] = [None] * len(cells)
    for dataset in dict.fromkeys(c.dataset for c in cells):
        index = [i for i, c in enumerate(cells) if c.dataset == dataset]
        words = [[*cells[i].experiment_words(), f"results_dir={results}"] for i in index]
        try:
            answers = commandline.resolve(dataset, words)
        except ValueError as e:
            raise GridError(str(e)) from None
        for i, answer in zip(index, answers, strict=True):
            if "error" in answer:
                raise GridError(f"{cells[i].label}: {answer['error'].rstrip('.')}.")
            configs[i] = answer["config"]
    return configs  # type: ignore[return-value]


def _value(config: dict[str, Any], key: str, fallback: dict[str, Any]) -> str:
    return json.dumps(config.get(key, fallback.get(key, _MISSING)), sort_keys=True, default=str)


def same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two configs give the same numbers: equal on every key but the runtime keys."""
    fallback = defaults()
    keys = (set(a) | set(b)) - set(RUNTIME_KEYS)
    return all(_value(a, k, fallback) == _value(b, k, fallback) for k in keys)


def runs_like(config: dict[str, Any], results: Path) -> list[RunFolder]:
    """The run folders of `results/<dataset>` with the same settings as `config`, newest
    first (folders with an unreadable config are passed over)."""
    base = results / config["dataset"]
    out = []
    for path in numbered_runs(base) if base.is_dir() else []:
        try:
            if same_settings(config, RunFolder(path).config()):
                out.append(RunFolder(path))
        except RecordError:
            continue
    return out


def lock_path(results: Path, cell: Cell) -> Path:
    return results / SWEEP_DIR / "locks" / f"{cell.name}.lock"


class CellLock:
    """The cell's lock (`flock`, dropped however the holder ends): one sweep at a time runs
    a cell. `acquire()` is False when another process holds it."""

    def __init__(self, results: Path, cell: Cell) -> None:
        self.path = lock_path(results, cell)
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def locked_elsewhere(results: Path, cell: Cell) -> bool:
    """Whether another process holds the cell's lock (nothing is created)."""
    path = lock_path(results, cell)
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def decide(cell: Cell, config: dict[str, Any], results: Path, *, locked: bool = False) -> Plan:
    """What to do with `cell` now. `locked`: this process holds the cell's lock (else a lock
    held elsewhere makes it busy)."""
    if not locked and locked_elsewhere(results, cell):
        return Plan(cell, config, BUSY, None, "another sweep is running it")
    runs = runs_like(config, results)
    statuses = [(f, f.status_or_unreadable()) for f in runs]
    for folder, status in statuses:
        if status == "COMPLETED":
            return Plan(cell, config, SKIP, folder.path, status)
    for folder in runs:
        pid = folder.in_use()
        if pid is not None:
            return Plan(cell, config, BUSY, folder.path, f"in use by pid {pid}")
    if statuses:
        folder, status = statuses[0]
        return Plan(cell, config, RESUME, folder.path, status)
    return Plan(cell, config, RUN)


def plan(cells: list[Cell], configs: list[dict[str, Any]], results: Path) -> list[Plan]:
    """`decide` for every cell."""
    return [decide(c, cfg, results) for c, cfg in zip(cells, configs, strict=True)]
