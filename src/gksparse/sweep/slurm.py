"""The cells as Slurm jobs, through submitit: one job array per dataset, each job one cell
(`cell.run_cell_in_job`), its stdout and stderr in `<results>/<dataset>/_slurm/`.

The jobs submitted are recorded in `<results>/_sweep/slurm.json`, so that a rerun of the
sweep (after `--no-wait`, or after this process was stopped) waits for the jobs still queued
or running instead of submitting their cells again. Ctrl-C or SIGTERM while waiting cancels
the jobs (Slurm's SIGTERM reaches the experiment, which records the run INTERRUPTED).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data import files
from ..training.progress import show_bars
from .cell import FAILED, INTERRUPTED, Job, Outcome, run_cell_in_job, settled
from .plan import SWEEP_DIR, Plan

JOBS = "slurm.json"
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")
POLL_S = 5.0
CANCEL_WAIT_S = 120.0  # how long a stopped sweep waits for Slurm to end its jobs


class SlurmError(RuntimeError):
    """Slurm or submitit cannot be used as asked; one sentence."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each cell's job asks of Slurm."""

    partition: str | None = None
    time_min: int = 240
    mem_gb: float | None = None
    cpus: int = 1
    gpus: int = 0
    parallel: int | None = None  # most jobs of an array running at once
    extra: tuple[tuple[str, str], ...] = ()  # more sbatch options: (name, value)


def parse_time(text: str) -> int:
    """Slurm's time formats ('240', '4:00:00', '1-00:00:00', '30:00') -> minutes."""
    try:
        days, _, rest = text.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:
            minutes = parts[0] + parts[1] / 60
        else:
            minutes = parts[0] * 60 + parts[1] + parts[2] / 60
        minutes += int(days or 0) * 24 * 60
    except ValueError:
        raise ValueError(f"--time {text!r} is not a time; use minutes or H:MM:SS.") from None
    if minutes <= 0:
        raise ValueError(f"--time {text!r} is not a time; use minutes or H:MM:SS.")
    return max(1, round(minutes))


def _submitit():
    try:
        import submitit
    except ImportError:
        raise SlurmError(
            "--slurm needs submitit, the 'slurm' extra: pip install -e '.[slurm]'."
        ) from None
    return submitit


def _executor(folder: Path, options: SlurmOptions):
    submitit = _submitit()
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"))
    params: dict[str, Any] = dict(
        time=options.time_min,
        cpus_per_task=options.cpus,
        job_name="gksparse-sweep",
        signal_delay_s=min(90, options.time_min * 15),  # submitit's USR2 before the end
    )
    if options.partition:
        params["partition"] = options.partition
    if options.mem_gb:
        params["mem"] = f"{int(options.mem_gb * 1024)}M"
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if options.parallel:
        params["array_parallelism"] = options.parallel
    if options.extra:
        params["additional_parameters"] = dict(options.extra)
    executor.update_parameters(**params)
    return executor


def active_jobs(job_ids: list[str]) -> set[str]:
    """The ids among `job_ids` that Slurm still has queued or running (`squeue`)."""
    if not job_ids:
        return set()
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
        ).stdout
    except FileNotFoundError:
        raise SlurmError("--slurm needs Slurm's commands (squeue, sbatch) on PATH.") from None
    return {i for i, state in (line.split()[:2] for line in out.splitlines()) if state in ACTIVE}


def _records(results: Path) -> dict[str, dict[str, str]]:
    """The jobs submitted before, by cell name ({} when none, or the file is damaged)."""
    try:
        value = json.loads((results / SWEEP_DIR / JOBS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_records(results: Path, records: dict[str, dict[str, str]]) -> None:
    (results / SWEEP_DIR).mkdir(parents=True, exist_ok=True)
    files.write_json(records, results / SWEEP_DIR / JOBS)


def submit(
    plans: list[Plan], results: str, options: SlurmOptions, cwd: str, say: Callable = tqdm.write
) -> dict[int, Any]:
    """Submit the cells that need it (one array per dataset) and reattach to those whose jobs
    are still queued or running; returns submitit jobs by plan index."""
    submitit = _submitit()
    root = Path(cwd) / results
    records = _records(root)
    alive = active_jobs([r["job_id"] for r in records.values()])
    jobs: dict[int, Any] = {}
    new: dict[str, list[int]] = {}
    for i, plan in enumerate(plans):
        record = records.get(plan.cell.name)
        if record and record["job_id"] in alive:
            jobs[i] = submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"])
            say(f"queued before {plan.cell.label}: Slurm job {record['job_id']}")
        elif settled(plan) is None:
            new.setdefault(plan.cell.dataset, []).append(i)
    for dataset, index in new.items():
        folder = root / dataset / "_slurm"
        executor = _executor(folder, options)
        gpus = options.gpus
        with executor.batch():
            submitted = [
                executor.submit(run_cell_in_job, Job(plans[i], results, cwd, options.cpus, gpus))
                for i in index
            ]
        for i, job in zip(index, submitted, strict=True):
            jobs[i] = job
            records[plans[i].cell.name] = {"job_id": job.job_id, "folder": str(folder / "%j")}
            say(f"submitted {plans[i].cell.label}: {plans[i].action}, Slurm job {job.job_id}")
    _write_records(root, records)
    return jobs


def _outcome(plan: Plan, job: Any) -> Outcome:
    """The outcome a finished job returned, or why it has none."""
    try:
        return job.result()
    except Exception as e:  # submitit's: the job failed, was cancelled or timed out
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        state = job.state
        status = INTERRUPTED if state.startswith(("CANCELLED", "TIMEOUT")) else FAILED
        error = f"Slurm job {job.job_id} ended {state} ({first}); its output: {job.paths.stderr}"
        return Outcome(plan.cell, status, plan.action, error=error)


def _cancel(plans: list[Plan], pending: dict[int, Any], say: Callable) -> dict[int, Outcome]:
    """Cancel the pending jobs and wait (at most CANCEL_WAIT_S) until Slurm has ended them:
    the outcomes of those that ran, INTERRUPTED for the others."""
    say("stopping: cancelling the sweep's Slurm jobs (their runs end INTERRUPTED)")
    for job in pending.values():
        job.cancel(check=False)
    deadline = time.time() + CANCEL_WAIT_S
    while active_jobs([j.job_id for j in pending.values()]) and time.time() < deadline:
        time.sleep(1)
    out = {}
    for i, job in pending.items():
        if job.done(force_check=True):
            out[i] = _outcome(plans[i], job)
        else:  # cancelled while queued: it never ran
            error = f"Slurm job {job.job_id} cancelled before it started"
            out[i] = Outcome(plans[i].cell, INTERRUPTED, plans[i].action, error=error)
    return out


def _poll(plans: list[Plan], pending: dict[int, Any], started: set[int], say: Callable):
    """One look at the pending jobs: a line for each that started; the outcomes of those
    that ended, by plan index."""
    ended = {}
    for i, job in pending.items():
        if i not in started and job.state == "RUNNING":
            started.add(i)
            say(f"start {plans[i].cell.label}: Slurm job {job.job_id}")
        if job.done():
            ended[i] = _outcome(plans[i], job)
    return ended


def wait(
    plans: list[Plan], jobs: dict[int, Any], say: Callable = tqdm.write
) -> tuple[list[Outcome], bool]:
    """Wait for the jobs, a line as each starts and ends; returns (outcomes in grid order,
    whether a signal stopped the wait and cancelled the jobs)."""
    outcomes = [None if i in jobs else settled(p) for i, p in enumerate(plans)]
    for o in outcomes:
        if o is not None:
            say(o.line())
    stopped: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: stopped.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    started: set[int] = set()
    pending = dict(jobs)
    bar = tqdm(
        total=len(jobs),
        unit="cell",
        desc="sweep (Slurm)",
        dynamic_ncols=True,
        disable=not show_bars(),
    )
    try:
        while pending:
            ended = _cancel(plans, pending, say) if stopped else _poll(plans, pending, started, say)
            for i, outcome in ended.items():
                outcomes[i] = outcome
                say(outcome.line())
                bar.update()
                del pending[i]
            time.sleep(POLL_S if pending else 0)
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return [o for o in outcomes if o is not None], bool(stopped)
