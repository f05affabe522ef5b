"""Filling a `.npy` memory map on all cores, each worker writing its own rows in place."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def cores() -> int:
    """The number of CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def fill(
    path: Path,
    make: Callable[..., np.ndarray],
    tasks: Sequence[tuple[int, tuple[Any, ...]]],
    *,
    desc: str,
    progress: bool = True,
    processes: int | None = None,
) -> None:
    """For every task `(start, args)`, write `block = make(*args)` to rows `start:start+len(block)`.

    path: an existing `.npy` file, opened in each process as a writable memory map, so results
        never travel back through pipes. make: a module-level function (it is pickled).
    Runs on `processes` worker processes (default: all cores), or in this process for one task.
    """
    total = sum(_count(args) for _, args in tasks)
    jobs = [(str(path), make, start, args) for start, args in tasks]
    processes = min(processes or cores(), len(jobs))
    with tqdm(total=total, desc=desc, unit="video", disable=not progress) as bar:
        if processes <= 1:
            for job in jobs:
                bar.update(_fill_one(job))
            return
        pool = ProcessPoolExecutor(processes, mp_context=_context())
        try:
            for future in as_completed([pool.submit(_fill_one, job) for job in jobs]):
                bar.update(future.result())
        except BrokenProcessPool as e:
            raise RuntimeError(
                f"a worker process died while generating {desc} (out of memory?); "
                "try again with fewer cores or more memory"
            ) from e
        finally:  # on an error, drop the tasks not started yet instead of running them all
            pool.shutdown(wait=True, cancel_futures=True)


def _count(args: tuple[Any, ...]) -> int:
    """Rows a task writes: the length of its first argument."""
    return len(args[0])


def _fill_one(job: tuple[str, Callable[..., np.ndarray], int, tuple[Any, ...]]) -> int:
    path, make, start, args = job
    block = make(*args)
    out = np.load(path, mmap_mode="r+")
    out[start : start + len(block)] = block
    del out
    return len(block)


def _context() -> multiprocessing.context.BaseContext:
    """'fork' where it is safe and cheap (Linux), else 'spawn'."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
