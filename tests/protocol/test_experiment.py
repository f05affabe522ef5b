"""The experiment scripts end to end: the seed's command line, run folders, resume, report.

These run the `smoke` configs as a user would, in subprocesses, on the real MNIST in
`../shared/data` (or $GKSPARSE_DATA) and on a small COIL-100 folder written by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import write_coil
from runs import (
    REPO,
    SHARED,
    check_run_folder,
    check_same_result,
    interrupt_in_pretraining,
)

from gksparse.data import files
from gksparse.report import main as report_main

pytestmark = pytest.mark.slow


def command(dataset: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / f"{dataset}.py"), "with", *args]


def run(dataset: str, *args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(dataset, *args),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=cwd,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # No GKSPARSE_DATA: the commands say where the data is, or the run folder remembers.
    e = {k: v for k, v in os.environ.items() if k not in ("GKSPARSE_DATA", "PYTHONWARNINGS")}
    e["GKSPARSE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return e


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def coil_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_coil(root, objects=tuple(range(1, 6)), size=32)
    return root


def folder_of(p: subprocess.CompletedProcess) -> Path:
    return Path(p.stdout.split("run folder: ")[1].split()[0])


def check_one_error_line(p: subprocess.CompletedProcess, message: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr + p.stdout


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
    assert "Warning" not in p.stderr, p.stderr  # a normal run prints no warning
    folder = folder_of(p)
    assert folder.parent == results / "mnistrotated"
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == method and config["seed"] == 5
    # the reference's rules, written out: Keras clipnorm for the CRNN, head carried over
    assert config["clipnorm"] == (1.0 if method.endswith("rnn") else 0.0)
    assert (config["carry_head"], config["adam"], config["class_weight"]) == (
        True,
        "keras",
        "none",
    )
    assert config["autocast"] is False
    check_run_folder(folder, ["200"])
    # the end: a small table and the run folder; no sacred 'Result: {...}' dict line
    tail = p.stdout.strip().splitlines()
    assert tail[-1] == f"run folder: {folder}" and "test accuracy (%)" in p.stdout
    assert "Result: {" not in p.stderr + p.stdout


def test_run_records_are_complete_and_readable_by_others(env, results):
    folder = results / "mnistrotated" / "1"
    if not (folder / "run.json").is_file():
        pytest.skip("runs after test_smoke_on_mnistrotated")
    record = json.loads((folder / "run.json").read_text())
    experiment = record["experiment"]
    assert experiment["mainfile"] == "mnistrotated.py"
    assert {s for s, _ in experiment["sources"]} >= {"mnistrotated.py"}
    assert any(d.startswith("torch==") for d in experiment["dependencies"])
    assert record["host"]["torch"]["version"].startswith("2.") and record["device"] == "cpu"
    cout = (folder / "cout.txt").read_text()
    assert "\r" not in cout and "pretrain epoch 1/1: loss" in cout and len(cout) < 20_000
    for path in folder.iterdir():  # umask 022: 0644, as the other users need
        if path.is_file() and path.name != ".lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


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
    folder = folder_of(p)
    result = check_run_folder(folder, ["4"])
    assert result["budgets"]["4"]["n_train"] == 5  # one short video per object
    assert json.loads((folder / "config.json").read_text())["carry_head"] is False


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
    (folder / ".result.json.x1.tmp").write_text("left by a killed writer")
    # As the README says: resume= alone, from anywhere; the data root is the saved one.
    p = run("mnistrotated", "resume=" + str(folder), env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"run folder: {folder}" in p.stdout
    check_same_result(check_run_folder(folder, ["200"]), expected, "200")
    assert json.loads((folder / "config.json").read_text())["data_dir"] == str(SHARED)
    assert not list(folder.glob(".*.tmp"))  # cleaned up on resume
    assert not (tmp_path / "results").exists()  # nothing written where it ran


def test_ctrl_c_ends_with_where_the_run_is_and_how_to_resume(env, tmp_path):
    args = ("groupwtacnn", "smoke", "epochs=3", "seed=9", f"data_dir={SHARED}")
    proc = subprocess.Popen(
        command("mnistrotated", *args, f"results_dir={tmp_path}", "progress=False"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default handling even where this test runs in the background (bash starts
        # background jobs with SIGINT ignored, and Python then installs no handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = tmp_path / "mnistrotated" / "1" / "pretrain_state.pt"
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()  # still running: the signal lands in it
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    folder = state.parent
    assert proc.returncode == 130
    assert out.strip().splitlines()[-1] == (
        f"interrupted: the run is in {folder}; resume it with: "
        f"python experiments/mnistrotated.py with resume={folder}"
    )
    assert "Traceback" not in out + err
    assert json.loads((folder / "run.json").read_text())["status"] == "INTERRUPTED"


def test_report_on_the_smoke_runs(results, capsys):
    if not list(results.rglob("result.json")):
        pytest.skip("runs only after the smoke tests in this module")
    assert report_main([str(results)]) == 0
    table = capsys.readouterr().out
    assert "### mnistrotated" in table and "| groupwtacrnn | - | end-to-end |" in table
    assert (results / "report.csv").is_file() and (results / "accuracy_coil100.png").is_file()


def test_help_lists_methods_ablations_sizes_and_options(env):
    p = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "mnistrotated.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 0
    assert "\nRotated MNIST.\n" in p.stdout  # the dataset script's own words
    for word in ("groupwtacrnn", "vgg19", "nospatial", "smoke", "small", "resume=", "seed="):
        assert word in p.stdout, word


# -- bad settings: refused before any work ------------------------------------------------------
BAD_SETTINGS = [
    ("epochs=abc", "epochs='abc' is not a valid setting"),
    ("epochs=0", "epochs=0 is not a valid setting"),
    ("lr=abc", "lr='abc' is not a valid setting"),
    ("seed=abc", "seed='abc' is not a valid setting"),
    ("batch_size=-3", "batch_size=-3 is not a valid setting"),
    ("batch_size=0", "batch_size=0 is not a valid setting"),
    ("filters=0", "filters=0 is not a valid setting"),
    ("groups=5", "groups=5 is not a valid setting: use a divisor of filters=64"),
    ("num_labeled=200", "use a list of label budgets"),
    ("num_labeled=[0]", "use budgets from 86 to 216"),
    ("num_labeled=[100000]", "use budgets from 86 to 216"),
    ("eval_batch_size=0", "eval_batch_size=0 is not a valid setting"),
    ("zca_epsilon=-1", "zca_epsilon=-1 is not a valid setting"),
    ("autocast=maybe", "autocast='maybe' is not a valid setting: use True or False"),
    ("class_weight=auto", "class_weight='auto' is not a valid setting"),
    ("device=tpu", "device='tpu' is not a valid setting"),
    ("filterz=3", "unknown config key 'filterz'"),
    ("nosuchmethod", "unknown method or config 'nosuchmethod'"),
    ("resume=/nonexistent/run", "is not a run folder"),
]
if not __import__("torch").cuda.is_available():
    BAD_SETTINGS.append(("device=cuda", "a CPU-only build; install a CUDA build"))


@pytest.mark.parametrize(("arg", "message"), BAD_SETTINGS)
def test_bad_settings_are_refused_before_any_work(arg, message, env, tmp_path):
    p = run("mnistrotated", "groupwtacnn", "smoke", arg, f"results_dir={tmp_path}", env=env)
    check_one_error_line(p, message)
    assert not list(tmp_path.rglob("run.json")) and not list(tmp_path.rglob("config.json"))


def test_a_missing_data_folder_is_one_sentence(env, tmp_path):
    p = run("mnistrotated", "groupwtacnn", "smoke", "data_dir=/nonexistent", env=env, cwd=tmp_path)
    check_one_error_line(p, "/nonexistent/mnist")
    assert json.loads(next(tmp_path.rglob("run.json")).read_text())["status"] == "FAILED"


def test_unwritable_results_folder(env, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    p = run("mnistrotated", "groupwtacnn", f"results_dir={blocked / 'sub'}", env=env)
    check_one_error_line(p, "cannot write run records")


# -- resume that can fix a run -------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixed_run(env, tmp_path_factory):
    """A run that failed in fine-tuning (finetune_lr far too high), then resumed with a
    better finetune_lr: (failed process, resumed process, run folder, pretrained.pt's bytes
    after the failure)."""
    results = tmp_path_factory.mktemp("fixed")
    args = ("groupwtacnn", "smoke", "seed=3", f"data_dir={SHARED}", f"results_dir={results}")
    failed = run("mnistrotated", *args, "finetune_lr=1e6", env=env)
    folder = results / "mnistrotated" / "1"
    pretrained = (folder / "pretrained.pt").read_bytes()
    resumed = run("mnistrotated", f"resume={folder}", "finetune_lr=1e-5", env=env)
    return failed, resumed, folder, pretrained


def test_a_failed_run_says_why_in_its_records(fixed_run):
    failed, _, folder, _ = fixed_run
    check_one_error_line(failed, "the finetune loss became nan")
    assert f"with resume={folder} [key=value]" in failed.stderr  # how to continue
    cout = (folder / "cout.txt").read_text()
    assert "error: the finetune loss became nan" in cout


def test_resume_with_a_changed_finetune_lr_finishes_the_failed_run(fixed_run):
    _, resumed, folder, pretrained = fixed_run
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "pretraining already done" in resumed.stderr
    assert (folder / "pretrained.pt").read_bytes() == pretrained  # pretraining kept
    check_run_folder(folder, ["200"])
    (change,) = json.loads((folder / "changes.json").read_text())
    assert (change["key"], change["old"], change["new"]) == ("finetune_lr", 1e6, 1e-5)
    assert change["time"]
    assert json.loads((folder / "config.json").read_text())["finetune_lr"] == 1e-5
    record = json.loads((folder / "run.json").read_text())
    assert len(record["resumed"]) == 1 and record["start_time"] < record["resumed"][0]


def test_resuming_a_finished_run_changes_nothing(fixed_run, env):
    folder = fixed_run[2]

    def records() -> dict[str, bytes]:  # all but the lock, which holds its last holder's pid
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}

    before = records()
    p = run("mnistrotated", f"resume={folder}", env=env)
    assert p.returncode == 0 and "is finished" in p.stdout
    assert records() == before


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("mnistrotated", ("lr=1e-3",), "cannot change lr (the pretraining already ran"),
        ("mnistrotated", ("finetune_lr=1e-4",), "budget(s) 200 already finished"),
        ("mnistrotated", ("smoke",), "takes no named configs"),
        ("cifar10scanned", (), "is a run of mnistrotated, not cifar10scanned; resume it with"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(fixed_run, env, script, args, message):
    folder = fixed_run[2]
    before = (folder / "run.json").read_bytes()
    check_one_error_line(run(script, f"resume={folder}", *args, env=env), message)
    assert (folder / "run.json").read_bytes() == before


def test_a_run_folder_has_one_writer_at_a_time(fixed_run, env):
    folder = fixed_run[2]
    files.hold_folder(folder)  # as a running process does
    try:
        p = run("mnistrotated", f"resume={folder}", env=env)
    finally:
        files.release_folder(folder)
    check_one_error_line(p, f"is in use by another process (pid {os.getpid()})")


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("metrics.json", "", "metrics.json is damaged"),
        ("config.json", '{"dataset": "mnistr', "config.json is damaged"),
        ("result.json", "[1, 2", "result.json is damaged"),
        ("run.json", "\x00\x01", "run.json is damaged"),
    ],
)
def test_a_damaged_record_is_one_sentence_naming_it(
    fixed_run, env, tmp_path, name, damage, message
):
    folder = tmp_path / "run"
    shutil.copytree(fixed_run[2], folder, ignore=shutil.ignore_patterns(".lock"))
    (folder / name).write_text(damage)
    check_one_error_line(run("mnistrotated", f"resume={folder}", env=env), message)


def test_a_damaged_pretraining_state_is_one_sentence(fixed_run, env, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(fixed_run[2], folder, ignore=shutil.ignore_patterns(".lock"))
    (folder / "result.json").unlink()  # pretraining not finished: its state is read
    (folder / "pretrain_state.pt").write_bytes(b"PK\x03\x04 not a whole file")
    p = run("mnistrotated", f"resume={folder}", env=env)
    check_one_error_line(p, "pretrain_state.pt is damaged")
    assert "delete it and resume" in p.stderr


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
    assert epoch.endswith("s") and float(rate) > 0 and float(projected) > 0
    assert [r[3] for r in rows.values()] == ["4", "4", "4"]  # classifier epochs follow epochs
    assert lines[-1].startswith("projected protocol: ") and lines[-1].endswith(" min")
    assert not (tmp_path / "results").exists()
