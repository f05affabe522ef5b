"""Run folders written before the experiment layer's redesign (commit 320ec17) still resume,
report and give features.

`old_runs/mnistrotated/` holds two smoke runs of `groupwtacnn` (filters=8, groups=2) as
that code left them: run 1 COMPLETED (budget 200), run 2 INTERRUPTED by Ctrl-C after its
first of three pretraining epochs (`pretrain_state.pt`, no `pretrained.pt`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gksparse.features import cli as features_cli
from gksparse.protocol.trained import load_encoder
from gksparse.report import main as report_main

REPO = Path(__file__).resolve().parents[1]
OLD = Path(__file__).resolve().parent / "old_runs"
SHARED = Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data")

pytestmark = pytest.mark.slow


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy of the old results folder (`<tmp>/mnistrotated/{1,2}`)."""
    shutil.copytree(OLD, tmp_path / "results")
    return tmp_path / "results"


def experiment(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GKSPARSE_DATA"}
    env["GKSPARSE_CACHE"] = str(cache)
    cmd = [sys.executable, str(REPO / "experiments" / "mnistrotated.py"), "with", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def test_the_report_counts_the_old_completed_run_and_lists_the_interrupted_one(old, capsys):
    assert report_main([str(old)]) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if line.startswith("| groupwtacnn |")]
    assert [row.split(" | ")[2] for row in rows] == ["stacked", "end-to-end"]
    accuracy = json.loads((old / "mnistrotated/1/result.json").read_text())["budgets"]["200"]
    assert f"{100 * accuracy['stacked']['test']['accuracy']:.2f} |" in rows[0]
    assert f"not counted: {old / 'mnistrotated' / '2'}: INTERRUPTED" in err


def test_an_old_run_gives_its_encoder_and_features(old, tmp_path):
    encoder = load_encoder(old / "mnistrotated")  # the newest completed run: 1
    assert encoder.path == old / "mnistrotated" / "1" / "pretrained.pt"
    assert encoder.run_config["filters"] == 8 and encoder.frame_shape == (1, 14, 14)
    x = torch.rand(3, 5, 1, 14, 14, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = encoder.features(x)
        assert features.shape == (3, 8 * 7 * 7)
        # the classifier's view: its dense layer on the features is the model's logits
        logits = encoder.head(encoder.encoder(x))
        torch.testing.assert_close(encoder.head.dense(features), logits)
    videos = tmp_path / "videos" / "digit"
    rng = np.random.default_rng(0)
    for v in range(3):
        (videos / f"v{v}").mkdir(parents=True)
        for t in range(6):
            frame = (rng.random((14, 14)) * 255).astype(np.uint8)
            Image.fromarray(frame).save(videos / f"v{v}" / f"{t}.png")
    out = tmp_path / "features.npz"
    assert features_cli([str(old / "mnistrotated" / "1"), str(videos.parent), str(out)]) == 0
    saved = np.load(out)
    assert saved["features"].shape == (3, 392) and list(saved["classes"]) == ["digit"]


def test_an_old_interrupted_run_resumes_to_the_uninterrupted_result(old, tmp_path):
    cache = tmp_path / "cache"
    folder = old / "mnistrotated" / "2"
    saved = torch.load(folder / "pretrain_state.pt", weights_only=True)["history"]
    p = experiment(f"resume={folder}", f"data_dir={SHARED}", cache=cache, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((folder / "run.json").read_text())["status"] == "COMPLETED"
    resumed = json.loads((folder / "result.json").read_text())
    assert resumed["pretrain"]["history"][0] == saved[0]["loss"]  # epoch 1 was not redone
    # it saved progress=True, its default then; into a pipe now: epoch lines, no bars
    assert "\r" not in p.stderr and "pretrain epoch 3/3: loss " in p.stdout
    args = ("groupwtacnn", "smoke", "seed=2", "filters=8", "groups=2", "epochs=3")
    whole = experiment(
        *args,
        "train_size=480",
        f"data_dir={SHARED}",
        f"results_dir={tmp_path / 'whole'}",
        cache=cache,
        cwd=tmp_path,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads(next((tmp_path / "whole").rglob("result.json")).read_text())
    assert resumed["pretrain"]["history"] == pytest.approx(expected["pretrain"]["history"])
    for stage in ("stacked", "finetune"):
        got, want = resumed["budgets"]["200"][stage], expected["budgets"]["200"][stage]
        assert got["test"]["accuracy"] == want["test"]["accuracy"]
        assert got["test"]["loss"] == pytest.approx(want["test"]["loss"], rel=1e-5)


def test_an_old_finished_run_takes_a_new_budget(old, tmp_path):
    folder = old / "mnistrotated" / "1"
    pretrained = (folder / "pretrained.pt").read_bytes()
    before = json.loads((folder / "result.json").read_text())["budgets"]["200"]
    p = experiment(
        f"resume={folder}",
        f"data_dir={SHARED}",
        "num_labeled=[200,100]",
        cache=tmp_path / "cache",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "pretraining already done" in p.stderr and "label budget 200 already done" in p.stderr
    result = json.loads((folder / "result.json").read_text())
    assert set(result["budgets"]) == {"200", "100"}
    # the finished budget keeps its numbers; the resume adds the probes it lacked
    done = result["budgets"]["200"]
    assert {k: v for k, v in done.items() if k != "probe"} == before
    assert set(done["probe"]) == {"linear", "knn"}
    assert (folder / "pretrained.pt").read_bytes() == pretrained
    assert (folder / "finetune_n100.pt").is_file()
    changes = json.loads((folder / "changes.json").read_text())
    (change,) = [c for c in changes if c["key"] == "num_labeled"]  # data_dir may change too
    assert (change["old"], change["new"]) == ([200], [200, 100])
