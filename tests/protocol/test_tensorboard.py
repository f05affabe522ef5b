"""TensorBoard event files of a run folder: what they hold, resume, off, no package, damage.

The protocol runs in-process on the tiny dataset of test_pipeline.py; the slow tests at the
end run the `smoke` command as a user would, its output into a file or a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from test_pipeline import config, tiny  # noqa: F401  (tiny: the fixture the tests use)

import gksparse.protocol.tensorboard as board_module
from gksparse.protocol.pipeline import run_protocol
from gksparse.report import main as report_main

SHARED = Path(os.environ.get("GKSPARSE_DATA") or Path(__file__).parents[2].parent / "shared/data")
EVENTS = "events.out.tfevents.*"


class Killed(Exception):
    pass


def kill_at(metric: str, step: int):
    """A log_fn that stops the run when `metric` is logged at `step` (as a kill would)."""

    def log_fn(name: str, value: float, at: int) -> None:
        if name == metric and at == step:
            raise Killed

    return log_fn


def accumulator(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def steps(events: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


def raw_steps(folder: Path) -> dict[str, list[int]]:
    """Every tag's steps in the order the event files hold them (no reader's purging)."""
    out: dict[str, list[int]] = {}
    for path in sorted(folder.glob(EVENTS)):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(event.step)
    return out


def hparams_of(events: EventAccumulator) -> tuple[dict, list[str]]:
    """(the session's hyperparameters, the experiment's metric tags)."""
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {
        k: getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()
    }
    return values, [m.name.tag for m in exp.experiment.metric_infos]


@pytest.mark.usefixtures("tiny")
def test_every_stage_per_epoch_the_tests_pictures_and_settings(tmp_path):
    result = run_protocol(config(epochs=2, num_labeled=[30, 60]), tmp_path)
    assert list(tmp_path.glob(EVENTS)) and not [p for p in tmp_path.iterdir() if p.is_dir()]
    events = accumulator(tmp_path)
    scalars = set(events.Tags()["scalars"])
    for tag in ("pretrain/loss", "pretrain/seconds", "pretrain/test_loss"):
        assert tag in scalars, tag
    assert steps(events, "pretrain/loss") == [1, 2]
    assert [e.value for e in events.Scalars("pretrain/loss")] == pytest.approx(
        result["pretrain"]["history"]
    )
    for n in ("30", "60"):
        for stage in ("stacked", "finetune"):
            epochs = result["budgets"][n][stage]["epochs"]
            for key in ("loss", "val_loss", "val_accuracy", "seconds"):
                assert steps(events, f"n{n}/{stage}/{key}") == list(range(1, epochs + 1))
            (test,) = events.Scalars(f"n{n}/{stage}/test_accuracy")
            assert test.value == pytest.approx(result["budgets"][n][stage]["test"]["accuracy"])
        (probe,) = events.Scalars(f"n{n}/probe/linear/test_accuracy")
        assert probe.value == pytest.approx(result["budgets"][n]["probe"]["linear"]["accuracy"])
    assert set(events.Tags()["images"]) == {"pretrain/reconstructions", "pretrain/decoder_filters"}
    settings, metrics = hparams_of(events)
    assert settings["lr"] == pytest.approx(1e-4) and settings["method"] == "groupwtacnn"
    assert settings["num_labeled"] == "[30, 60]" and settings["progress"] == "False"
    assert "n60/finetune/test_accuracy" in metrics and "n30/probe/knn/test_accuracy" in metrics


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize(
    ("metric", "step"),
    [
        ("pretrain.seconds", 2),  # after epoch 2's loss was written, before its state was saved
        ("n60.finetune.val_loss", 1),  # in the second budget, which starts again
    ],
)
def test_a_resumed_run_continues_the_curves(tmp_path, metric, step):
    cfg = config(epochs=3, num_labeled=[30, 60], patience=None)
    run_protocol(cfg, tmp_path / "whole")
    with pytest.raises(Killed):
        run_protocol(cfg, tmp_path / "cut", kill_at(metric, step))
    before = raw_steps(tmp_path / "cut")
    run_protocol(cfg, tmp_path / "cut")
    assert len(list((tmp_path / "cut").glob(EVENTS))) == 2  # the resume's own file
    got, want = raw_steps(tmp_path / "cut"), raw_steps(tmp_path / "whole")
    for tag, written in got.items():
        if not tag.startswith("_hparams_"):
            assert written == sorted(set(written)), (tag, written)  # increasing, once each
    assert {t: s for t, s in got.items() if "hparams" not in t} == {
        t: s for t, s in want.items() if "hparams" not in t
    }
    assert before  # the killed run had written some
    resumed, whole = accumulator(tmp_path / "cut"), accumulator(tmp_path / "whole")
    for tag in ("pretrain/loss", "n60/stacked/val_loss", "n60/finetune/test_accuracy"):
        assert [e.value for e in resumed.Scalars(tag)] == pytest.approx(
            [e.value for e in whole.Scalars(tag)], rel=1e-5
        )


@pytest.mark.usefixtures("tiny")
def test_tensorboard_false_writes_no_event_files(tmp_path):
    result = run_protocol(config(epochs=1, num_labeled=[], tensorboard=False), tmp_path)
    assert result["pretrain"]["epochs"] == 1 and not list(tmp_path.glob(EVENTS))


@pytest.mark.usefixtures("tiny")
def test_without_the_package_one_line_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(board_module, "_said_missing", False)
    for name in ("a", "b"):
        result = run_protocol(config(epochs=1, num_labeled=[30]), tmp_path / name)
        assert "30" in result["budgets"] and not list((tmp_path / name).glob(EVENTS))
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "tensorboard" in line] == [board_module.MISSING]
    assert "pip install 'gksparse[tensorboard]'" in board_module.MISSING


@pytest.mark.usefixtures("tiny")
def test_a_cut_event_file_is_still_read(tmp_path):
    run_protocol(config(epochs=2, num_labeled=[30]), tmp_path)
    (path,) = tmp_path.glob(EVENTS)
    path.write_bytes(path.read_bytes()[:-9])  # killed in the middle of a record
    events = accumulator(tmp_path)
    assert steps(events, "pretrain/loss") == [1, 2]
    assert board_module.last_steps(tmp_path)["pretrain/loss"] == 2


# -- the command, as a user runs it --------------------------------------------------------------
def command(results: Path, *words: str) -> list[str]:
    args = ["groupwtacnn", "smoke", "seed=1", f"data_dir={SHARED}", f"results_dir={results}"]
    return [sys.executable, "-m", "gksparse.run", "mnistrotated", "with", *args, *words]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    drop = ("GKSPARSE_DATA", "GKSPARSE_PROGRESS", "PYTHONWARNINGS")
    out = {k: v for k, v in os.environ.items() if k not in drop}
    out["GKSPARSE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return out


@pytest.fixture(scope="module")
def run_into_a_file(env, tmp_path_factory) -> tuple[Path, str]:
    """The smoke run, stdout and stderr into one file: (its run folder, what it wrote)."""
    results = tmp_path_factory.mktemp("results")
    out = results / "out.txt"
    with open(out, "w") as f:
        done = subprocess.run(command(results), stdout=f, stderr=subprocess.STDOUT, env=env)
    text = out.read_text()
    assert done.returncode == 0, text[-3000:]
    return results / "mnistrotated" / "1", text


@pytest.mark.slow
def test_a_run_into_a_file_writes_its_lines_and_no_bars(run_into_a_file):
    folder, text = run_into_a_file
    assert "\r" not in text and len(text.splitlines()) < 200
    for line in ("pretrain epoch 1/1: loss", "n=200 stacked epoch 1/1: loss", "test accuracy (%)"):
        assert line in text, line
    assert "pretrain epoch 1/1: loss" in (folder / "cout.txt").read_text()


@pytest.mark.slow
def test_a_run_has_event_files_that_a_cut_does_not_spoil(run_into_a_file, tmp_path):
    folder, _ = run_into_a_file
    copy = tmp_path / "results" / "mnistrotated" / "1"
    shutil.copytree(folder, copy)
    for path in copy.glob(EVENTS):
        path.write_bytes(path.read_bytes()[:-5])
    events = accumulator(copy)
    assert steps(events, "pretrain/loss") == [1]
    assert "n200/stacked/val_accuracy" in events.Tags()["scalars"]
    assert report_main([str(tmp_path / "results")]) == 0
    result = json.loads((copy / "result.json").read_text())
    assert "200" in result["budgets"]


@pytest.mark.slow
def test_in_a_terminal_the_bars_are_drawn(env, tmp_path):
    import termios

    main, child = pty.openpty()
    attrs = termios.tcgetattr(child)
    attrs[1] &= ~termios.ONLCR  # no '\r' of the terminal's own before each '\n'
    termios.tcsetattr(child, termios.TCSANOW, attrs)
    proc = subprocess.Popen(
        command(tmp_path), stdin=child, stdout=child, stderr=child, env=env, close_fds=True
    )
    os.close(child)
    try:
        seen = drain(main, until=rb"\r(?!\n)")
    finally:
        proc.send_signal(signal.SIGTERM)  # stops the run as Ctrl-C does
        drain(main)
        proc.wait(timeout=300)
        os.close(main)
    assert re.search(rb"\r(?!\n)", seen), seen[-2000:]


def drain(fd: int, until: bytes | None = None) -> bytes:
    """What the terminal `fd` shows until the pattern `until` appears in it or the program
    closes it (or shows nothing for 10 minutes)."""
    seen = b""
    while until is None or not re.search(until, seen):
        ready, _, _ = select.select([fd], [], [], 600)
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:  # the program closed the terminal
            chunk = b""
        if not chunk:
            break
        seen += chunk
    return seen
