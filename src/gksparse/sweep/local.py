"""The cells on this machine: `workers` at once, the cores (or GPUs) split between them.

Each worker runs one cell at a time (`cell.run_cell`) with `cores // workers` torch threads,
and on a machine with GPUs one GPU of its own (CUDA_VISIBLE_DEVICES). A line as each cell
starts and ends, and, on a terminal (`training.progress.show_bars`:
$GKSPARSE_PROGRESS=bars|lines forces either), one progress bar over the cells with an ETA.
Ctrl-C or SIGTERM stops the running cells cleanly (each is recorded INTERRUPTED,
resumable) and starts no more; a second Ctrl-C kills them.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from ..training.progress import show_bars
from . import cell as cells
from .cell import Job, Outcome
from .plan import Plan


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    """The CUDA GPUs visible here (0 without a CUDA build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    """One worker per GPU; on a CPU, one worker per core with one thread each (measured the
    faster split on a 2-core CPU: see the README's sweep section)."""
    return gpu_count() or cores()


class _Stopper:
    """SIGINT/SIGTERM while the pool runs: first stop the cells, then kill them."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.count = say, 0
        self.previous = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            self.say("stopping: the running cells record where they are (Ctrl-C again kills them)")
            cells.stop_all()
        else:
            cells.kill_all()

    @property
    def stopped(self) -> bool:
        return self.count > 0


def run_local(
    plans: list[Plan], results: str, workers: int, say: Callable[[str], None] = tqdm.write
) -> tuple[list[Outcome], bool]:
    """Run every cell that needs it; returns (the outcomes in grid order, whether the sweep
    was stopped by a signal)."""
    outcomes: list[Outcome | None] = [cells.settled(p) for p in plans]
    for o in outcomes:
        if o is not None:
            say(o.line())
    todo = [i for i, o in enumerate(outcomes) if o is None]
    threads = max(1, cores() // workers)
    gpus = gpu_count()
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(workers):
        slots.put(slot)
    bar = tqdm(
        total=len(todo), unit="cell", desc="sweep", dynamic_ncols=True, disable=not show_bars()
    )

    def work(i: int) -> None:
        plan = plans[i]
        if cells.stopping():
            outcomes[i] = Outcome(
                plan.cell, cells.NOT_STARTED, plan.action, plan.folder and str(plan.folder)
            )
            return
        slot = slots.get()
        try:
            folder = f" {plan.folder}" if plan.folder else ""
            say(f"start {plan.cell.label}: {plan.action}{folder}")
            log = str(cells.sweep_log(Path(results), plan.cell))
            job = Job(plan, results, os.getcwd(), threads, log=log)
            if gpus:
                job = replace(job, gpu_ids=str(slot % gpus))
            outcomes[i] = cells.run_cell(job)
            say(outcomes[i].line())
            bar.update()
        finally:
            slots.put(slot)

    with _Stopper(say) as stopper, ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work, i) for i in todo]:
            future.result()
    bar.close()
    cells.resume_all()
    return [o for o in outcomes if o is not None], stopper.stopped
