"""What training prints, fitted to where it goes.

On a terminal, transient progress bars under one line per epoch; into a file or a pipe (a
Slurm job log, a sweep's cell log, `> log`), no bar redraws: the epoch lines, and during an
epoch longer than a minute a plain progress line at most once a minute (`StepLines`).
`$GKSPARSE_PROGRESS=bars|lines` or the `progress` setting forces either.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

__all__ = ["LINE_EVERY_S", "PROGRESS_ENV", "StepLines", "epoch_line", "show_bars"]

PROGRESS_ENV = "GKSPARSE_PROGRESS"  # 'bars' or 'lines': what progress=None shows
LINE_EVERY_S = 60.0  # the plain progress lines' least interval within an epoch
_clock = time.monotonic  # the tests' fake clock replaces it


def show_bars(progress: bool | None = None) -> bool:
    """Whether progress bars redraw: `progress` True forces them, False hides them; None
    follows $GKSPARSE_PROGRESS ('bars' or 'lines') when set, else whether stderr (where the
    bars go) is a terminal: a file or a pipe gets no redraws, only plain lines."""
    if progress is not None:
        return bool(progress)
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if mode in ("bars", "lines"):
        return mode == "bars"
    return sys.stderr.isatty()


def epoch_line(desc: str, record: dict[str, float], epochs: int) -> str:
    """One line for an epoch's record: `desc epoch e/E: loss ..., val_loss ..., ... (s)`."""
    parts = [f"loss {record['loss']:.4g}"]
    if "val_loss" in record:
        parts.append(f"val_loss {record['val_loss']:.4g}")
    if "val_accuracy" in record:
        parts.append(f"val_accuracy {100 * record['val_accuracy']:.1f}%")
    seconds = f" ({record['seconds']:.0f} s)" if "seconds" in record else ""
    return f"{desc} epoch {record['epoch']}/{epochs}: {', '.join(parts)}{seconds}"


class StepLines:
    """The plain progress of one epoch where bars do not fit: after a step, a line
    `desc epoch e/E: step s/S, loss L (t s)` when `LINE_EVERY_S` have passed since the epoch
    began or since the last line; so an epoch shorter than that prints nothing but its
    epoch line. `enabled` False: never a line."""

    def __init__(self, desc: str, epoch: int, epochs: int, steps: int, enabled: bool) -> None:
        self.head = f"{desc} epoch {epoch}/{epochs}"
        self.steps, self.enabled = steps, enabled
        self.started = self.last = _clock()

    def step(self, step: int, loss: float) -> None:
        """Note that `step` (1-based) is done with the running mean loss `loss`."""
        if not self.enabled or step >= self.steps:
            return  # the epoch line follows the last step
        now = _clock()
        if now - self.last >= LINE_EVERY_S:
            self.last = now
            elapsed = now - self.started
            tqdm.write(f"{self.head}: step {step}/{self.steps}, loss {loss:.4g} ({elapsed:.0f} s)")
