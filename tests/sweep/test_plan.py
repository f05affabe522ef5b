"""What a sweep does with each cell, read from the run folders already there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sweeps import CELL, CONFIG, make_run

from gksparse.protocol import commandline
from gksparse.sweep import grid, plan


def test_same_settings_ignores_runtime_keys_and_reads_missing_keys_as_defaults():
    old = {k: v for k, v in CONFIG.items() if k != "global_lifetime"}  # an older run's config
    assert plan.same_settings(CONFIG, {**old, "device": "cuda", "data_dir": "/x", "resume": "y"})
    assert not plan.same_settings(CONFIG, {**CONFIG, "seed": 2})
    assert not plan.same_settings(CONFIG, {**CONFIG, "num_labeled": [300, 600]})
    assert not plan.same_settings(CONFIG, {**CONFIG, "global_lifetime": False})


def test_no_run_means_run(tmp_path):
    p = plan.decide(CELL, CONFIG, tmp_path)
    assert (p.action, p.folder) == (plan.RUN, None)


def test_a_completed_run_of_the_same_settings_is_skipped(tmp_path):
    make_run(tmp_path, 1, "COMPLETED", seed=2)  # another cell's
    done = make_run(tmp_path, 2, "COMPLETED", device="cpu")
    make_run(tmp_path, 3, "FAILED")
    p = plan.decide(CELL, CONFIG, tmp_path)
    assert (p.action, p.folder, p.why) == (plan.SKIP, done, "COMPLETED")


@pytest.mark.parametrize("status", ["FAILED", "INTERRUPTED", "RUNNING"])
def test_a_run_that_did_not_finish_is_resumed_newest_first(tmp_path, status):
    make_run(tmp_path, 1, "FAILED")
    newest = make_run(tmp_path, 2, status)
    make_run(tmp_path, 3, "INTERRUPTED", epochs=7)  # other settings: not this cell's
    p = plan.decide(CELL, CONFIG, tmp_path)
    assert (p.action, p.folder, p.why) == (plan.RESUME, newest, status)


def _hold(path: Path, code: str) -> subprocess.Popen:
    """Another process that holds a lock until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"{code}\nprint('held', flush=True)\nimport sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=path,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_folder_in_use_or_a_locked_cell_is_busy(tmp_path):
    folder = make_run(tmp_path, 1, "RUNNING")
    holder = _hold(folder, "from gksparse.data import files; files.hold_folder('.')")
    try:
        p = plan.decide(CELL, CONFIG, tmp_path)
        assert p.action == plan.BUSY and f"pid {holder.pid}" in p.why
    finally:
        holder.communicate("")
    assert plan.decide(CELL, CONFIG, tmp_path).action == plan.RESUME

    lock = plan.CellLock(tmp_path, CELL)
    assert lock.acquire()
    try:
        assert plan.CellLock(tmp_path, CELL).acquire() is False  # one holder at a time
        assert plan.decide(CELL, CONFIG, tmp_path, locked=True).action == plan.RESUME
    finally:
        lock.release()
    assert not plan.locked_elsewhere(tmp_path, CELL)


def test_a_cell_locked_by_another_process_is_busy(tmp_path):
    path = plan.lock_path(tmp_path, CELL)
    path.parent.mkdir(parents=True)
    code = (
        f"import fcntl, os; fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX)"
    )
    holder = _hold(tmp_path, code)
    try:
        assert plan.locked_elsewhere(tmp_path, CELL)
        p = plan.decide(CELL, CONFIG, tmp_path)
        assert p.action == plan.BUSY and "another sweep" in p.why
    finally:
        holder.communicate("")
    assert plan.decide(CELL, CONFIG, tmp_path).action == plan.RUN


def _config(*words: str) -> dict:
    """The whole config of `python -m gksparse.run mnistrotated with groupwtacnn seed=1 <words>`."""
    answer = commandline.resolve("mnistrotated", [["groupwtacnn", "seed=1", *words]])[0]
    return answer["config"]


def test_a_varied_cell_finds_the_runs_made_with_its_words_after_with(tmp_path):
    done = make_run(tmp_path, 1, "COMPLETED", **_config("smoke", "epochs=30"))
    make_run(tmp_path, 2, "COMPLETED", **_config("smoke", "epochs=3"))
    failed = make_run(tmp_path, 3, "FAILED", **_config("smoke", "epochs=10"))
    vary = grid.parse_vary(["epochs=30,10,20"])
    cells = grid.cells(["mnistrotated"], ["groupwtacnn"], ["none"], [1], ["smoke"], vary)
    plans = plan.plan(cells, plan.resolve(cells, tmp_path), tmp_path)
    assert [(p.cell.label, p.action, p.folder) for p in plans] == [
        ("mnistrotated groupwtacnn seed=1 epochs=30", plan.SKIP, done),
        ("mnistrotated groupwtacnn seed=1 epochs=10", plan.RESUME, failed),
        ("mnistrotated groupwtacnn seed=1 epochs=20", plan.RUN, None),
    ]
    # the lock follows the varied value: a run of epochs=30 does not lock out epochs=10
    assert plan.lock_path(tmp_path, cells[0]).name.endswith("-seed1-epochs=30.lock")
    lock = plan.CellLock(tmp_path, cells[0])
    assert lock.acquire()
    try:
        assert plan.decide(cells[1], plans[1].config, tmp_path).action == plan.RESUME
    finally:
        lock.release()
