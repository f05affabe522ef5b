"""`checkpoint_path` / `load_encoder` on a results folder: its newest completed run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gksparse.model.checkpoint import save_checkpoint
from gksparse.model.video import ModelConfig, build_model
from gksparse.protocol.trained import checkpoint_path, latest_run, load_encoder


def make_run(results: Path, run_id: int | str, status: str | None, seed: int) -> Path:
    """A run folder `results/<run_id>` as the protocol leaves it: pretrained.pt (weights drawn
    from `seed`), config.json naming the run, and run.json with `status` (None: no run.json)."""
    folder = results / str(run_id)
    torch.manual_seed(seed)
    model = build_model(ModelConfig("groupwtacnn", 1, 8, 8, 2, filters=4, groups=2))
    save_checkpoint(folder / "pretrained.pt", model)
    (folder / "config.json").write_text(json.dumps({"frames": 4, "seed": seed}))
    if status is not None:
        (folder / "run.json").write_text(json.dumps({"status": status}))
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """`results/videos` with runs 1 and 2 COMPLETED and run 10 FAILED, beside sacred's
    `_sources` folder; run 1 was written last, so by time it would be the newest."""
    folder = tmp_path / "results" / "videos"
    (folder / "_sources").mkdir(parents=True)
    for run_id, status in ((2, "COMPLETED"), (10, "FAILED"), (1, "COMPLETED")):
        make_run(folder, run_id, status, seed=run_id)
    newest = max(os.stat(folder / str(i) / "run.json").st_mtime for i in (1, 2, 10)) + 60
    os.utime(folder / "1" / "run.json", (newest, newest))
    return folder


def test_newest_completed_run_by_number_passing_over_failed_ones(results):
    assert latest_run(results) == results / "2"  # not 10 (FAILED), not 1 (newer by time)
    assert checkpoint_path(results) == results / "2" / "pretrained.pt"
    encoder = load_encoder(results)
    assert encoder.path == results / "2" / "pretrained.pt"
    assert encoder.run_config["seed"] == 2
    two = load_encoder(results / "2")
    for name, value in two.encoder.state_dict().items():
        assert torch.equal(encoder.encoder.state_dict()[name], value), name
    make_run(results, 10, "COMPLETED", seed=10)  # 10 > 2 although '10' < '2' as text
    assert checkpoint_path(results) == results / "10" / "pretrained.pt"
    assert load_encoder(results).run_config["seed"] == 10


def test_running_unreadable_and_unrecorded_runs_do_not_count(results):
    make_run(results, 11, "RUNNING", seed=11)
    make_run(results, 12, None, seed=12)  # no run.json: not a run folder of sacred's
    (make_run(results, 13, "COMPLETED", seed=13) / "run.json").write_text('{"status": "COMP')
    assert latest_run(results) == results / "2"


def test_no_completed_run_is_one_sentence(results):
    for run_id in (1, 2):
        (results / str(run_id) / "run.json").write_text(json.dumps({"status": "FAILED"}))
    make_run(results, 3, "INTERRUPTED", seed=3)
    message = (
        f"{results} holds no completed run (newest runs: 1 FAILED, 2 FAILED, 3 INTERRUPTED, "
        "10 FAILED); finish or resume one, or pass a run folder or a .pt file."
    )
    for call in (latest_run, checkpoint_path, load_encoder):
        with pytest.raises(FileNotFoundError) as error:
            call(results)
        assert str(error.value) == message


def test_a_folder_without_runs_or_checkpoints_says_what_to_pass(tmp_path):
    empty = tmp_path / "results" / "videos"
    (empty / "_sources").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no run folders"):
        latest_run(empty)
    with pytest.raises(FileNotFoundError, match="is not a run folder .* or a .pt file"):
        checkpoint_path(empty)


def test_a_run_folder_and_a_checkpoint_file_are_taken_as_they_are(results):
    # A run folder is used even when it failed: it was named explicitly.
    assert checkpoint_path(results / "10") == results / "10" / "pretrained.pt"
    assert checkpoint_path(results / "1" / "pretrained.pt") == results / "1" / "pretrained.pt"
    with pytest.raises(FileNotFoundError, match="run folder .*/2 has no finetune_n300"):
        checkpoint_path(results, which="finetune_n300")  # the newest completed run's
