"""The experiment scripts end to end: the seed's command line, run folders, resume, report.

These run the `smoke` configs as a user would, in subprocesses, on the real MNIST in
`../shared/data` (or $GKSPARSE_DATA) and on a small COIL-100 folder written by the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import write_coil

from gksparse.report import main as report_main

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data")
RUN_FILES = (
    "config.json",
    "run.json",
    "metrics.json",
    "cout.txt",
    "result.json",
    "pretrained.pt",
    "reconstructions.png",
    "decoder_filters.png",
)

pytestmark = pytest.mark.slow


def command(dataset: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / f"{dataset}.py"), "with", *args]


def run(dataset: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(dataset, *args), capture_output=True, text=True, env=env, timeout=900
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ, GKSPARSE_CACHE=str(tmp_path_factory.mktemp("cache")))
    e["PYTHONWARNINGS"] = "ignore"
    return e


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def coil_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_coil(root, objects=tuple(range(1, 6)), size=32)
    return root


def check_run_folder(folder: Path, budgets: list[str]) -> dict:
    for name in RUN_FILES:
        assert (folder / name).is_file(), f"{name} missing in {folder}"
    run_record = json.loads((folder / "run.json").read_text())
    assert run_record["status"] == "COMPLETED"
    result = json.loads((folder / "result.json").read_text())
    assert run_record["result"] == result
    assert result["pretrain"]["train_loss"] > 0 and result["pretrain"]["test_loss"] > 0
    assert sorted(result["budgets"]) == sorted(budgets)
    for n in budgets:
        for stage in ("stacked", "finetune"):
            assert (folder / f"{stage}_n{n}.pt").is_file()
            for split in ("train", "val", "test"):
                assert set(result["budgets"][n][stage][split]) == {"loss", "accuracy"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "pretrain.loss" in metrics and f"n{budgets[0]}.stacked.val_loss" in metrics
    return result


@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn"])
def test_smoke_on_mnistrotated(method, env, results):
    p = run(
        "mnistrotated",
        method,
        "smoke",
        "seed=5",
        f"results_dir={results}",
        f"data_dir={SHARED}",
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    folder = Path(p.stdout.split("run folder: ")[1].split()[0])
    assert folder.parent == results / "mnistrotated"
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == method and config["seed"] == 5
    assert config["clipnorm"] == (1.0 if method.endswith("rnn") else None)
    check_run_folder(folder, ["200"])


@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn"])
def test_smoke_on_coil100(method, env, results, coil_root):
    p = run(
        "coil100",
        method,
        "smoke",
        "seed=5",
        f"results_dir={results}",
        f"data_dir={coil_root}",
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    folder = Path(p.stdout.split("run folder: ")[1].split()[0])
    result = check_run_folder(folder, ["4"])
    assert result["budgets"]["4"]["n_train"] == 5  # one short video per object


def test_killed_run_resumes_to_the_same_result(env, tmp_path):
    args = ("groupwtacnn", "smoke", "epochs=3", "seed=9", f"data_dir={SHARED}")
    whole = run("mnistrotated", *args, f"results_dir={tmp_path / 'whole'}", env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads(next((tmp_path / "whole").rglob("result.json")).read_text())

    cut = tmp_path / "cut"
    folder = interrupt_in_pretraining(
        command("mnistrotated", *args, f"results_dir={cut}"), cut, signal.SIGKILL, env
    )
    assert not (folder / "result.json").exists() or "budgets" in json.loads(
        (folder / "result.json").read_text()
    )

    p = run("mnistrotated", "resume=" + str(folder), f"results_dir={cut}", env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"run folder: {folder}" in p.stdout
    check_same_result(check_run_folder(folder, ["200"]), expected, "200")


def interrupt_in_pretraining(cmd: list[str], results: Path, sig: int, env) -> Path:
    """Start the mnistrotated run `cmd` (run 1 under `results`), send it `sig` as soon as
    it has saved a pretraining state, wait for it to end; returns its run folder."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = results / "mnistrotated" / "1" / "pretrain_state.pt"
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return state.parent


def check_same_result(resumed: dict, expected: dict, budget: str) -> None:
    """A resumed run's result equals the uninterrupted run's (within float rounding)."""
    assert resumed["pretrain"]["history"] == pytest.approx(expected["pretrain"]["history"])
    for stage in ("stacked", "finetune"):
        got, want = resumed["budgets"][budget][stage], expected["budgets"][budget][stage]
        assert got["test"]["accuracy"] == want["test"]["accuracy"]
        assert got["test"]["loss"] == pytest.approx(want["test"]["loss"], rel=1e-5)


def test_report_on_the_smoke_runs(results, capsys):
    if not list(results.rglob("result.json")):
        pytest.skip("runs only after the smoke tests in this module")
    assert report_main([str(results)]) == 0
    table = capsys.readouterr().out
    assert "### mnistrotated" in table and "| groupwtacrnn | - | end-to-end |" in table
    assert (results / "report.csv").is_file() and (results / "accuracy_coil100.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (("nosuchmethod",), "unknown method or config 'nosuchmethod'"),
        (("groupwtacnn", "filterz=3"), "unknown config key 'filterz'"),
        (("groupwtacnn", "resume=/nonexistent/run"), "is not a run folder"),
        (("groupwtacnn", "smoke", "data_dir=/nonexistent"), "/nonexistent/mnist"),
        (("groupwtacnn", "smoke", "groups=5"), "groups=5 must divide"),
    ],
)
def test_bad_input_gets_one_clear_sentence(args, message, env, tmp_path):
    p = run(
        "mnistrotated", *args, f"results_dir={tmp_path}", env=dict(env, GKSPARSE_DATA=str(SHARED))
    )
    assert p.returncode != 0
    assert message in p.stderr
    assert "Traceback" not in p.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_unwritable_results_folder(env, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    p = run("mnistrotated", "groupwtacnn", f"results_dir={blocked / 'sub'}", env=env)
    assert p.returncode != 0 and "cannot write run records" in p.stderr


def test_protocol_time_projects_one_epoch_of_every_stage(env, tmp_path):
    """bench/protocol_time.py on the smoke config: every stage measured and projected to
    the config's epochs; nothing is written to results/."""
    args = ["mnistrotated", "groupwtacnn", "smoke", "epochs=4", f"data_dir={SHARED}"]
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "protocol_time.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    rows = {" ".join(line.split()[:-6]): line.split()[-6:] for line in lines[2:-1]}
    assert list(rows) == ["pretrain", "n=200 stacked", "n=200 finetune"]
    videos, epoch, rate, epochs, projected, unit = rows["pretrain"]
    assert (int(videos), int(epochs), unit) == (240, 4, "m")
    seconds = float(epoch[:-1])  # printed to 0.1 s
    assert 240 / float(rate) == pytest.approx(seconds, abs=0.06)
    # an epoch measured once, projected 4 times (plus the final evaluations); 0.01 min steps
    assert float(projected) * 60 >= 4 * (seconds - 0.05) - 0.3
    total = sum(float(r[4]) for r in rows.values())
    assert lines[-1].startswith("projected protocol: ")
    assert float(lines[-1].split()[2]) == pytest.approx(total, abs=0.2)
    assert not (tmp_path / "results").exists()
