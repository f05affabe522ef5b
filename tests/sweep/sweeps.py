"""A sweep as a user runs it, in a subprocess: the grid of the issue's 'done when' (two
methods x two seeds of `smoke`), shrunk to seconds a cell, locally or through Slurm; and one
cell with its config and run folders written by hand, for the planner's tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gksparse.protocol.config import defaults
from gksparse.sweep.grid import Cell

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data")
GRID = ["mnistrotated", "--methods", "groupwtacnn,randominitcnn", "--seeds", "1,2"]
# smoke, smaller still; three epochs, so that a sweep can be stopped inside a cell
WORDS = ["with", "smoke", "filters=8", "groups=2", "epochs=3", f"data_dir={SHARED}"]
CELL = Cell("mnistrotated", "groupwtacnn", "none", 1)
CONFIG = {**defaults(), "dataset": "mnistrotated", "method": "groupwtacnn", "seed": 1}


def make_run(results: Path, number: int, status: str, **changes) -> Path:
    """`results/mnistrotated/<number>/` with CONFIG (and `changes`) and `status`."""
    folder = results / "mnistrotated" / str(number)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**CONFIG, **changes}))
    (folder / "run.json").write_text(json.dumps({"status": status}))
    return folder


def sweep_command(results: Path, *options: str, words: list[str] = WORDS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gksparse.sweep",
        *GRID,
        "--results",
        str(results),
        *options,
        *words,
    ]


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "GKSPARSE_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}


def sweep(results: Path, cache: Path, *options: str, words=WORDS) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_command(results, *options, words=words),
        capture_output=True,
        text=True,
        env=env(cache),
        cwd=REPO,
        timeout=1200,
    )


def statuses(results: Path) -> dict[str, str]:
    """Run folder name -> status, for every run folder of the grid's dataset."""
    out = {}
    for run in sorted((results / "mnistrotated").glob("[0-9]*")):
        out[run.name] = json.loads((run / "run.json").read_text())["status"]
    return out


def stop_inside_a_cell(results: Path, cache: Path, sig: int, *options: str) -> str:
    """Start the sweep, send `sig` once a cell has finished a pretraining epoch, and return
    what it printed (it must end by itself, with exit code 130)."""
    proc = subprocess.Popen(
        sweep_command(results, *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(cache),
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 900
    while not list(results.glob("mnistrotated/*/pretrain_state.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, out
    return out


def summary_lines(out: str) -> list[str]:
    """How the sweep's summary says each cell ended: 'COMPLETED', 'skipped', 'FAILED', ..."""
    lines = out.split("sweep summary:")[1].splitlines()
    cells = [line for line in lines if line.startswith("  ") and " seed=" in line]
    return [line.split(": ")[1].split(",")[0].split(" ")[0] for line in cells]


def report_rows(results: Path) -> list[list[str]]:
    """The rows of report.md's table, as lists of cells."""
    lines = (results / "report.md").read_text().splitlines()
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")
    ]


def check_a_stopped_sweep_finishes_when_run_again(results: Path, cache: Path, sig, *options):
    """The issue's scenario: stopped inside a cell, the same command resumes the cell and
    ends with exactly 4 COMPLETED runs in 4 run folders and a report of 2 seeds a row; run
    once more, it starts nothing."""
    out = stop_inside_a_cell(results, cache, sig, *options)
    assert "continue with: " in out
    assert "INTERRUPTED" in statuses(results).values()
    again = sweep(results, cache, *options)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume" in again.stdout
    assert statuses(results) == {str(i): "COMPLETED" for i in range(1, 5)}
    rows = report_rows(results)
    for method in ("groupwtacnn", "randominitcnn"):
        mine = [r for r in rows if r[0] == method and r[2] in ("stacked", "end-to-end")]
        assert len(mine) == 2 and all(r[4] == "2" for r in mine), rows
    third = sweep(results, cache, *options)
    assert third.returncode == 0, third.stdout + third.stderr
    assert summary_lines(third.stdout).count("skipped") == 4
    assert "start " not in third.stdout and "submitted" not in third.stdout
    assert statuses(results) == {str(i): "COMPLETED" for i in range(1, 5)}
