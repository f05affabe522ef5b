"""`python -m gksparse.sweep --slurm` through a real Slurm: the same grid as the local
tests, each cell a Slurm job submitted by submitit.

CI brings up a single-node Slurm on its own machine (`.ci/slurm-up.sh`, as root) before the
tests; elsewhere these tests need a Slurm whose `sinfo` answers (they are skipped without
one, and fail on CI, which must have it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from sweeps import check_a_stopped_sweep_finishes_when_run_again, statuses, summary_lines, sweep

pytestmark = pytest.mark.slow
SLURM = ["--slurm", "--time", "15", "--cpus-per-job", "1"]


def _slurm_answers() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(autouse=True)
def slurm():
    if _slurm_answers():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must run the Slurm tests: .ci/slurm-up.sh did not bring Slurm up")
    pytest.skip("no Slurm here (sbatch/sinfo); .ci/slurm-up.sh brings one up, as root")


def test_the_grid_through_slurm_stopped_and_run_again_ends_with_four_runs(tmp_path):
    results = tmp_path / "R"
    check_a_stopped_sweep_finishes_when_run_again(
        results, tmp_path / "cache", signal.SIGTERM, *SLURM
    )
    logs = list((results / "mnistrotated" / "_slurm").rglob("*_log.out"))
    assert len(logs) >= 4  # each job's stdout beside the run folders
    assert any("run folder: " in log.read_text() for log in logs)


def test_no_wait_returns_after_submitting_and_a_rerun_waits_without_resubmitting(tmp_path):
    results, cache = tmp_path / "R", tmp_path / "cache"
    first = sweep(results, cache, *SLURM, "--no-wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("submitted ") == 4 and "queued or running" in first.stdout
    again = sweep(results, cache, *SLURM)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "submitted " not in again.stdout  # it waited for the jobs already there
    assert sorted(set(summary_lines(again.stdout))) <= ["COMPLETED", "skipped"]
    assert len(summary_lines(again.stdout)) == 4
    assert "\r" not in again.stderr  # no waiter's bar into a pipe
    logs = [log.read_text() for log in (results / "mnistrotated" / "_slurm").rglob("*_log.*")]
    assert logs and not any("\r" in log for log in logs)  # the jobs' logs: lines, no bars
    assert statuses(results) == {str(i): "COMPLETED" for i in range(1, 5)}
    assert (results / "report.md").is_file()
