"""bench/gpu_check.sh, the GPU check in one command: its CPU form end to end (slow), and
the comparison and summary of bench/gpu_check.py on hand-written records."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CPU_STEPS = [
    "info",
    "tests",
    "smoke-cpu-groupwtacnn",
    "smoke-cpu-groupwtacrnn",
    "torchrun-cpu-groupwtacnn",
    "compare-torchrun-cpu",
    "collective-gloo",
    "train-step",
    "protocol-time-groupwtacnn",
]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


@pytest.mark.slow
def test_the_cpu_check_runs_every_step_and_passes(tmp_path):
    results = tmp_path / "check"
    # a timeout beyond the script's own deadline (15 minutes on the CPU)
    p = run_check(tmp_path, "--results", str(results), timeout=1200)
    summary = (results / "summary.txt").read_text()
    assert p.returncode == 0, summary + p.stderr[-2000:]
    assert p.stdout.rstrip().endswith(summary.rstrip())  # the summary comes last
    steps = [line.split("\t")[:2] for line in (results / "steps.tsv").read_text().splitlines()]
    assert steps == [[name, "passed"] for name in CPU_STEPS], summary
    assert summary.splitlines()[-1] == f"gpu check (cpu): all {len(CPU_STEPS)} steps passed"
    assert "steps/s" in summary and " min), pretraining " in summary


def write_run(results: Path, run_id: int, status: str, train_loss: float, accuracy: float):
    folder = results / "mnistrotated" / str(run_id)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": status}))
    budget = {
        "stacked": {"test": {"accuracy": accuracy}},
        "finetune": {"test": {"accuracy": accuracy}},
        "probe": {"linear": {"accuracy": 0.5}, "knn": {"accuracy": 0.4}},
    }
    result = {"pretrain": {"train_loss": train_loss, "test_loss": 0.1}, "budgets": {"200": budget}}
    (folder / "result.json").write_text(json.dumps(result))


def test_compare_reads_the_completed_runs_and_applies_the_tolerances(tmp_path, capsys):
    write_run(tmp_path / "cpu", 1, "COMPLETED", 0.1, 0.50)
    write_run(tmp_path / "cpu", 2, "FAILED", 9.0, 0.0)  # not completed: not read
    write_run(tmp_path / "cuda", 1, "COMPLETED", 0.101, 0.55)
    assert gpu_check.compare(tmp_path / "cpu", tmp_path / "cuda", 0.02, 10.0) == 0
    out = capsys.readouterr().out
    assert "n=200 stacked accuracy" in out and "5.0 pt  ok" in out
    assert out.splitlines()[-1].startswith("6 of 6 metrics within tolerance")
    assert gpu_check.compare(tmp_path / "cpu", tmp_path / "cuda", 0.02, 4.0) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no completed run"):
        gpu_check.run_result(tmp_path / "nothing")


def test_summary_lists_the_steps_speeds_and_projections(tmp_path, capsys):
    (tmp_path / "steps.tsv").write_text(
        "info\tpassed\t3\t\ntrain-step\tpassed\t50\t\nprotocol-time-groupwtacnn\ttimeout\t150\tover\n"
    )
    (tmp_path / "info.log").write_text("torch 2\ndevice: cuda (H100)\n")
    (tmp_path / "train-step.log").write_text(
        "torch 2; device=cuda\nbf16 ('a fast', autocast): native\nconfig method ...\n"
        "mnistrotated   groupwtacnn      0.020s   0.010s   0.018s   0.040s    1.11"
        "    4.00  4.6e-07  5.8e-02    0.018s    0.019s\ntotal 3 s\n"
    )
    (tmp_path / "protocol-time-groupwtacnn.log").write_text(
        "gksparse: a note on stderr\n"
        "mnistrotated groupwtacnn on cuda (H100), torch 2\nstage videos\n"
        "pretrain             60000     20.0s      3000      50    17.00 m\n"
        "projected protocol: 90.0 min\n"
    )
    assert gpu_check.summary(tmp_path, "cuda") == 1  # a step timed out
    text = (tmp_path / "summary.txt").read_text()
    assert capsys.readouterr().out == text
    assert "device: cuda (H100)" in text.splitlines()[0]
    assert "fp32   50.00 steps/s   bf16  100.00 steps/s (native)" in text
    assert "mnistrotated groupwtacnn        1.50 h (90.0 min), pretraining 3000 videos/s" in text
    assert text.splitlines()[-1] == (
        "gpu check (cuda): 1 of 3 steps did not pass: protocol-time-groupwtacnn"
    )


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel of one module, `gpu_check_tiny`, as pip installs it."""
    path = folder / "gpu_check_tiny-0.1-py3-none-any.whl"
    info = "gpu_check_tiny-0.1.dist-info"
    files = {
        "gpu_check_tiny.py": "VALUE = 7\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpu-check-tiny\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def run_check(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`bash bench/gpu_check.sh --device cpu ARGS` in `tmp_path`, with this python."""
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--device", "cpu", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
    )


def test_wheels_install_offline_into_the_results_folder(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)
    results = tmp_path / "check"
    # --minutes 0: the install runs (its own deadline), every check after it is out of time
    p = run_check(tmp_path, "--wheels", str(wheels), "--results", str(results), "--minutes", "0")
    steps = [line.split("\t") for line in (results / "steps.tsv").read_text().splitlines()]
    assert steps[0][:2] == ["install-wheels", "passed"], p.stdout + p.stderr
    assert (results / "site" / "gpu_check_tiny.py").read_text() == "VALUE = 7\n"
    assert all(status == "not run" for _, status, *_ in steps[1:]) and len(steps) > 1
    assert p.returncode == 1  # not every step passed


@pytest.mark.parametrize("make", ["nothing", "empty"])
def test_wheels_without_wheels_is_one_sentence_and_exit_2(tmp_path, make):
    wheels = tmp_path / "wheels"
    if make == "empty":
        wheels.mkdir()
    p = run_check(tmp_path, "--wheels", str(wheels), "--results", str(tmp_path / "check"))
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: --wheels {wheels} holds no .whl files; fill it with bench/gpu_wheels.sh."
    ]
