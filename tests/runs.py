"""Helpers of the tests that run whole experiments in subprocesses: where the repository and
the data are, what a completed run folder holds, and how to interrupt and compare runs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

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
    assert f"n{budgets[0]}.stacked.val_accuracy" in metrics
    return result


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
