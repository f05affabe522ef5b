"""Output that fits where it goes: progress bars on a terminal, only the epoch lines in a file.

Under pytest stderr is no terminal, as in a file or a pipe; `GKSPARSE_PROGRESS` and
`progress=True` force bars, `progress=False` silences training. The whole command, into a
file and into a pseudo-terminal: tests/protocol/test_tensorboard.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from tiny_models import small_model

from gksparse.data.containers import Videos
from gksparse.sweep.local import run_local
from gksparse.training import engine
from gksparse.training.engine import ClassificationLoss, Stage, fit, show_bars


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_setting(monkeypatch):
    monkeypatch.delenv(engine.PROGRESS_ENV, raising=False)


def test_bars_only_on_a_terminal_unless_forced(monkeypatch):
    assert show_bars() is False  # pytest's stderr: no terminal
    assert show_bars(True) is True and show_bars(False) is False
    monkeypatch.setattr("sys.stderr", Terminal())
    assert show_bars() is True and show_bars(False) is False
    monkeypatch.setenv(engine.PROGRESS_ENV, "lines")
    assert show_bars() is False and show_bars(True) is True
    monkeypatch.setenv(engine.PROGRESS_ENV, "bars")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert show_bars() is True


def labeled(seed: int) -> Videos:
    videos = np.random.default_rng(seed).random((6, 4, 1, 6, 6), dtype=np.float32)
    return Videos(videos, np.arange(6) % 3)


def train(progress: bool | None) -> None:
    model = small_model("wtacnn", 0)
    stage = Stage("stacked", model.trainable("stacked"), ClassificationLoss(), 2, 3, lr=1e-2)
    fit(model, stage, labeled(0), labeled(1), progress=progress, desc="n=6 stacked")


@pytest.mark.parametrize(
    ("progress", "setting", "bars", "lines"),
    [
        (None, None, False, True),  # the default, into a file or a pipe
        (None, "bars", True, True),
        (True, None, True, True),
        (True, "lines", True, True),
        (False, "bars", False, False),
    ],
)
def test_epoch_lines_and_bars(capsys, monkeypatch, progress, setting, bars, lines):
    if setting:
        monkeypatch.setenv(engine.PROGRESS_ENV, setting)
    train(progress)
    out, err = capsys.readouterr()
    assert ("\r" in err) is bars and "\r" not in out
    epochs = [line.split(":")[0] for line in out.splitlines() if " epoch " in line]
    assert epochs == (["n=6 stacked epoch 1/2", "n=6 stacked epoch 2/2"] if lines else [])


@pytest.mark.parametrize(("setting", "bars"), [(None, False), ("bars", True), ("lines", False)])
def test_the_sweep_bar_follows_the_same_rule(capsys, monkeypatch, tmp_path, setting, bars):
    if setting:
        monkeypatch.setenv(engine.PROGRESS_ENV, setting)
    assert run_local([], str(tmp_path), workers=1) == ([], False)
    assert ("\r" in capsys.readouterr().err) is bars
