"""`python -m gksparse.sweep` on this machine, end to end: the issue's 'done when'."""

from __future__ import annotations

import json
import signal

import pytest
from sweeps import WORDS, check_a_stopped_sweep_finishes_when_run_again, statuses, sweep

from gksparse.protocol import commandline

pytestmark = pytest.mark.slow


def test_a_sweep_stopped_by_ctrl_c_inside_a_cell_finishes_when_run_again(tmp_path):
    # SIGTERM takes the same path here (one handler for both); test_slurm.py sends SIGTERM.
    check_a_stopped_sweep_finishes_when_run_again(
        tmp_path / "R", tmp_path / "cache", signal.SIGINT, "--workers", "2"
    )


@pytest.mark.parametrize(
    ("options", "words", "says"),
    [
        (["--seeds", "1,x"], WORDS, "'x' is not a whole number"),
        (["--methods", "groupwtacnn,nope"], WORDS, "unknown method 'nope'"),
        (["--ablations", "some"], WORDS, "unknown ablation 'some'"),
        (["--workers", "0"], WORDS, "--workers 0"),
        ([], [*WORDS, "epochs=0"], "epochs=0 is not a valid setting"),
        ([], [*WORDS, "nosuchkey=1"], "unknown config key 'nosuchkey'"),
        (["--slurm", "--time", "soon"], WORDS, "--time 'soon'"),
    ],
)
def test_bad_sweep_input_is_one_sentence_and_exit_2_before_anything_runs(
    tmp_path, options, words, says
):
    results = tmp_path / "R"
    done = sweep(results, tmp_path / "cache", *options, words=words)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and says in errors[0]
    assert not results.exists()


def test_a_failing_cell_does_not_stop_the_others(tmp_path):
    # One cell's earlier run has a damaged result.json: its resume fails with one sentence.
    results = tmp_path / "R"
    words = [*WORDS[1:], "epochs=1", f"results_dir={results}"]
    config = commandline.resolve("mnistrotated", [["randominitcnn", "seed=2", *words]])[0]["config"]
    damaged = results / "mnistrotated" / "1"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text(json.dumps(config))
    (damaged / "run.json").write_text(json.dumps({"status": "FAILED"}))
    (damaged / "result.json").write_text("{")
    done = sweep(results, tmp_path / "cache", "--workers", "2", words=[*WORDS, "epochs=1"])
    assert done.returncode == 1, done.stdout + done.stderr
    summary = done.stdout.split("sweep summary:")[1]
    assert summary.count(": COMPLETED") == 3, summary
    cells = [line for line in summary.splitlines() if line.startswith("  mnistrotated ")]
    failed = [line for line in cells if "FAILED" in line]
    assert len(failed) == 1 and "randominitcnn seed=2" in failed[0]
    assert "result.json" in failed[0] and "is damaged" in failed[0]
    assert sorted(statuses(results).values()) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert (results / "report.md").is_file()
