"""Output that fits where it goes: progress bars on a terminal, plain lines in a file.

Under pytest stderr is no terminal, as in a file or a pipe; `GKSPARSE_PROGRESS` and
`progress=True` force bars, `progress=False` silences training. A long epoch without bars
prints a plain line at most once a minute (a fake clock here). The whole command, into a
file and into a pseudo-terminal: tests/protocol/test_tensorboard.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from tiny_models import small_model

from gksparse.data.containers import Videos
from gksparse.sweep.local import run_local
from gksparse.training import progress
from gksparse.training.engine import ClassificationLoss, Stage, fit
from gksparse.training.progress import show_bars


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_setting(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)


def test_bars_only_on_a_terminal_unless_forced(monkeypatch):
    assert show_bars() is False  # pytest's stderr: no terminal
    assert show_bars(True) is True and show_bars(False) is False
    monkeypatch.setattr("sys.stderr", Terminal())
    assert show_bars() is True and show_bars(False) is False
    monkeypatch.setenv(progress.PROGRESS_ENV, "lines")
    assert show_bars() is False and show_bars(True) is True
    monkeypatch.setenv(progress.PROGRESS_ENV, "bars")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert show_bars() is True


def labeled(seed: int) -> Videos:
    videos = np.random.default_rng(seed).random((6, 4, 1, 6, 6), dtype=np.float32)
    return Videos(videos, np.arange(6) % 3)


def train(shown: bool | None, epochs: int = 2) -> None:
    model = small_model("wtacnn", 0)
    stage = Stage("stacked", model.trainable("stacked"), ClassificationLoss(), epochs, 2, lr=1e-2)
    fit(model, stage, labeled(0), labeled(1), progress=shown, desc="n=6 stacked")


@pytest.mark.parametrize(
    ("shown", "setting", "bars", "lines"),
    [
        (None, None, False, True),  # the default, into a file or a pipe
        (None, "bars", True, True),
        (True, None, True, True),
        (True, "lines", True, True),
        (False, "bars", False, False),
    ],
)
def test_epoch_lines_and_bars(capsys, monkeypatch, shown, setting, bars, lines):
    if setting:
        monkeypatch.setenv(progress.PROGRESS_ENV, setting)
    train(shown)
    out, err = capsys.readouterr()
    assert ("\r" in err) is bars and "\r" not in out
    epochs = [line.split(":")[0] for line in out.splitlines()]
    assert epochs == (["n=6 stacked epoch 1/2", "n=6 stacked epoch 2/2"] if lines else [])


class Clock:
    """A fake `time.monotonic` that advances `step` seconds at each reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("setting", [None, "lines", "bars"])
def test_a_long_epoch_prints_a_plain_line_at_most_once_a_minute(capsys, monkeypatch, setting):
    if setting:
        monkeypatch.setenv(progress.PROGRESS_ENV, setting)
    monkeypatch.setattr(progress, "_clock", Clock(25.0))  # 3 steps an epoch, 25 s each
    train(None, epochs=1)
    out = capsys.readouterr().out.splitlines()
    if setting == "bars":
        assert [line.split(":")[0] for line in out] == ["n=6 stacked epoch 1/1"]
        return
    # readings at 25 (start), 50 (step 1), 75 (step 2: 50 s since the start, no line); the
    # last step leaves its line to the epoch line
    assert out[0].startswith("n=6 stacked epoch 1/1: loss ")
    monkeypatch.setattr(progress, "_clock", Clock(70.0))
    train(None, epochs=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("n=6 stacked epoch 1/1: step 1/3, loss ") and out[0].endswith("(70 s)")
    assert out[1].startswith("n=6 stacked epoch 1/1: step 2/3, loss ") and out[1].endswith(
        "(140 s)"
    )
    assert out[2].startswith("n=6 stacked epoch 1/1: loss ") and len(out) == 3


@pytest.mark.parametrize(("setting", "bars"), [(None, False), ("bars", True), ("lines", False)])
def test_the_sweep_bar_follows_the_same_rule(capsys, monkeypatch, tmp_path, setting, bars):
    if setting:
        monkeypatch.setenv(progress.PROGRESS_ENV, setting)
    assert run_local([], str(tmp_path), workers=1) == ([], False)
    assert ("\r" in capsys.readouterr().err) is bars
