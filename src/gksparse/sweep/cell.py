"""One cell, run: take the cell's lock, decide again (another sweep may have finished it),
run or resume `python -m gksparse.run <dataset>` in a child process, and say how it ended.

`run_cell` is what a local worker thread and a Slurm job both call. The child runs in its own
session, so that a terminal's Ctrl-C reaches only the sweep, which then stops each child with
one SIGTERM: the experiment scripts take it as Ctrl-C (the run is recorded INTERRUPTED and
can be resumed). In a Slurm job, the SIGTERM that Slurm sends before it stops the job is
passed on the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from ..protocol.config import RUNTIME_KEYS
from ..protocol.rundir.folder import RunFolder
from ..protocol.rundir.records import RecordError
from .grid import Cell
from .plan import BUSY, RESUME, SKIP, SWEEP_DIR, CellLock, Plan, decide

COMPLETED, FAILED, INTERRUPTED, SKIPPED = "COMPLETED", "FAILED", "INTERRUPTED", "skipped"
NOT_STARTED = "not started"  # the sweep stopped before the cell's turn
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_stopping = threading.Event()


@dataclass(frozen=True)
class Job:
    """What a cell needs to run anywhere: the plan, where results go, the working folder
    (relative paths in the settings are read from there), torch threads and GPUs."""

    plan: Plan
    results: str
    cwd: str
    threads: int | None = None
    gpus: int = 0
    log: str | None = None  # the child's output goes here (else to this process' stdout)
    gpu_ids: str | None = None  # CUDA_VISIBLE_DEVICES of the child (a local worker's GPU)


@dataclass
class Outcome:
    """How a cell ended: COMPLETED, FAILED, INTERRUPTED, skipped or busy."""

    cell: Cell
    status: str
    action: str
    folder: str | None = None
    accuracy: str = ""  # 'test accuracy 64.5% (n=600 end-to-end)'
    error: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The cell's end line."""
        where = f" {self.folder}" if self.folder else ""
        if self.status == COMPLETED:
            return f"{self.cell.label}: COMPLETED{where}, {self.accuracy} ({self.seconds:.0f} s)"
        if self.status == SKIPPED:
            return f"{self.cell.label}: skipped, COMPLETED before{where}, {self.accuracy}"
        if self.status == NOT_STARTED:
            return f"{self.cell.label}: not started ({self.action}{where} when continued)"
        return f"{self.cell.label}: {self.status}{where}: {self.error}"


def command(plan: Plan, results: str, gpus: int = 0) -> list[str]:
    """The child's command line: the cell's run, or the resume of its folder (with the
    runtime settings of the sweep's words: a resume keeps the rest as saved)."""
    cell = plan.cell
    if plan.action == RESUME:
        runtime = [w for w in cell.words if "=" in w and w.split("=")[0] in RUNTIME_KEYS]
        words = [f"resume={plan.folder}", *runtime]
    else:
        words = [*cell.experiment_words(), f"results_dir={results}"]
    launcher = [sys.executable]
    if gpus > 1:  # one process per GPU of the job
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    return [*launcher, "-m", "gksparse.run", cell.dataset, "with", *words]


def accuracy_text(folder: RunFolder, config: dict[str, Any]) -> str:
    """'test accuracy 64.5% (n=600 end-to-end)' for the run's last label budget."""
    try:
        result = folder.read_result()
        n = str(list(config.get("num_labeled") or [])[-1])
        accuracy = 100 * result["budgets"][n]["finetune"]["test"]["accuracy"]
        return f"test accuracy {accuracy:.1f}% (n={n} end-to-end)"
    except (RecordError, KeyError, IndexError, TypeError):
        return "no test accuracy"


def settled(plan: Plan, cwd: str | os.PathLike = ".") -> Outcome | None:
    """The outcome of a cell that needs no run (skipped, or busy elsewhere), else None;
    `cwd`: the folder a relative `plan.folder` is read from."""
    folder = None if plan.folder is None else str(plan.folder)
    if plan.action == SKIP:
        accuracy = accuracy_text(RunFolder(Path(cwd) / plan.folder), plan.config)
        return Outcome(plan.cell, SKIPPED, SKIP, folder, accuracy)
    if plan.action == BUSY:
        return Outcome(plan.cell, BUSY, BUSY, folder, error=plan.why)
    return None


def stopping() -> bool:
    """Whether `stop_all` was called (and `resume_all` not since)."""
    return _stopping.is_set()


def resume_all() -> None:
    """Let cells start again after `stop_all`."""
    _stopping.clear()


def kill_all() -> None:
    """Kill every running child at once (SIGKILL)."""
    with _children_lock:
        for child in _children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)


def stop_all() -> None:
    """Stop every running child (one SIGTERM each) and start no more."""
    _stopping.set()
    with _children_lock:
        for child in _children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)


def _env(job: Job) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if job.threads:
        env["OMP_NUM_THREADS"] = str(job.threads)
        env["MKL_NUM_THREADS"] = str(job.threads)
    if job.gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = job.gpu_ids
    return env


def _follow(child: subprocess.Popen, out: TextIO) -> str:
    """Copy the child's output to `out`; returns its last error sentence."""
    error = ""
    assert child.stdout is not None
    for line in child.stdout:
        out.write(line)
        out.flush()
        text = line.strip()
        if text.startswith("error: "):
            error = text[len("error: ") :]
    return error


def _run_child(job: Job) -> tuple[int, str]:
    """Run the cell's command; (exit code, error sentence)."""
    log = open(job.log, "a", encoding="utf-8") if job.log else sys.stdout  # noqa: SIM115
    try:
        log.write(f"$ {' '.join(command(job.plan, job.results, job.gpus))}\n")
        child = subprocess.Popen(
            command(job.plan, job.results, job.gpus),
            cwd=job.cwd,
            env=_env(job),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        with _children_lock:
            _children.add(child)
        if _stopping.is_set():
            os.killpg(child.pid, signal.SIGTERM)
        try:
            error = _follow(child, log)
            return child.wait(), error
        finally:
            with _children_lock:
                _children.discard(child)
    finally:
        if job.log:
            log.close()


def _folder_after(job: Job) -> str | None:
    """The cell's run folder once its child has ended: the one it resumed, else the one the
    planner finds now (under the cell's lock, only the child can have made it). Not read off
    the child's output: sacred copies stdout and stderr through two processes, so a line
    such as 'run folder: ...' can arrive with a log line spliced into it."""
    plan = job.plan
    if plan.folder is not None:
        return str(plan.folder)
    found = decide(plan.cell, plan.config, Path(job.cwd) / job.results, locked=True).folder
    return None if found is None else str(_relative(found, job))


def _relative(folder: Path, job: Job) -> Path:
    """`folder` as the sweep names it: relative to `job.cwd` when the results are."""
    return folder if Path(job.results).is_absolute() else Path(os.path.relpath(folder, job.cwd))


def _outcome(job: Job, code: int, error: str, started: float) -> Outcome:
    plan = job.plan
    folder = _folder_after(job)
    out = Outcome(plan.cell, FAILED, plan.action, folder, seconds=time.time() - started)
    status = RunFolder(Path(job.cwd) / folder).status_or_unreadable() if folder else ""
    if code == 0 and status == COMPLETED:
        out.status = COMPLETED
        out.accuracy = accuracy_text(RunFolder(Path(job.cwd) / folder), plan.config)
    elif code == 130 or status == INTERRUPTED or _stopping.is_set():
        out.status, out.error = INTERRUPTED, "stopped; the sweep's command resumes it"
    else:
        out.error = error or f"the run ended with exit code {code} (see its output)"
    return out


def run_cell(job: Job) -> Outcome:
    """Run one cell under its lock, as planned again now (see the module docstring)."""
    started = time.time()
    cell, results = job.plan.cell, Path(job.cwd) / job.results
    lock = CellLock(results, cell)
    if not lock.acquire():
        return Outcome(cell, BUSY, BUSY, error="another sweep is running it")
    try:
        plan = decide(cell, job.plan.config, results, locked=True)
        if plan.folder is not None:
            plan = replace(plan, folder=_relative(plan.folder, job))
        done = settled(plan, job.cwd)
        if done is not None:
            return done
        job = replace(job, plan=plan)
        if _stopping.is_set():
            return Outcome(cell, NOT_STARTED, plan.action, error="the sweep stopped first")
        code, error = _run_child(job)
        return _outcome(job, code, error, started)
    finally:
        lock.release()


def run_cell_in_job(job: Job) -> Outcome:
    """`run_cell` as a Slurm job's main function: SIGTERM (Slurm stopping the job, or
    scancel) stops the child cleanly instead of killing it."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop_all())
    try:
        return run_cell(job)
    finally:
        signal.signal(signal.SIGTERM, previous)


def sweep_log(results: Path, cell: Cell) -> Path:
    """Where a local worker keeps the output of the cell's runs."""
    path = results / SWEEP_DIR / "logs" / f"{cell.name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
