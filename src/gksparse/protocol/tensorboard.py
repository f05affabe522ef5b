"""TensorBoard event files of a run folder (`Board`): what the protocol logs, its pictures,
and the settings with the final accuracies, so that `tensorboard --logdir results/` shows
every run folder as one run, while it trains.

- Scalars: every metric the protocol logs (`Board.tee` passes them on), tagged by stage and
  label budget, '/' for '.': `pretrain/loss`, `pretrain/seconds`, `n600/stacked/val_loss`,
  `n600/finetune/test_accuracy`, `n600/probe/linear/test_accuracy`; the step is the stage's
  epoch (a stage's test numbers at its last epoch, the probes' at 0).
- Images: `pretrain/reconstructions` and `pretrain/decoder_filters`, the run folder's PNGs.
- HParams: the run's settings and, as its metrics, the test accuracies of every budget
  (`hparams`), rewritten each time the run completes.

The files are written by rank 0 alone, appended to and flushed after every epoch: a run
killed at any moment leaves at most a cut last record, which TensorBoard's readers skip (the
report reads JSON only). A resumed run appends a new event file to the same folder; on its
first write the steps already there are read, and a value at a step not after its tag's
last one is dropped: an exact resume redoes that epoch with the same numbers, so the curves
continue without duplicated or out-of-order steps.

Needs the `tensorboard` package (`pip install 'gksparse[tensorboard]'`); without it the run
says so in one line and goes on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .rundir.records import FILTERS, RECONSTRUCTIONS

LogFn = Callable[[str, float, int], None]
MISSING = (
    "note: no TensorBoard event files in this run: the tensorboard package is missing "
    "(pip install 'gksparse[tensorboard]'; tensorboard=False silences this line)."
)
EVENTS = "events.out.tfevents.*"  # the writer's file names
_said_missing = False


def tag_of(name: str) -> str:
    """The TensorBoard tag of a metric name: `n600.stacked.loss` -> `n600/stacked/loss`."""
    return name.replace(".", "/")


def last_steps(folder: Path) -> dict[str, int]:
    """The last step of every tag in the event files of `folder` (a cut last record, as a
    killed run leaves it, ends its file's reading)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    last: dict[str, int] = {}
    for path in sorted(folder.glob(EVENTS)):
        try:
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    last[value.tag] = max(event.step, last.get(value.tag, event.step))
        except Exception:  # damage beyond a cut record: keep what was read
            continue
    return last


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The tags and values of a result's test numbers: every budget's classifiers and
    probes, and the reconstruction loss on the test videos."""
    out: dict[str, float] = {}
    pretrain = result.get("pretrain") or {}
    if "test_loss" in pretrain:
        out["pretrain/test_loss"] = pretrain["test_loss"]
    for n, budget in result.get("budgets", {}).items():
        for stage in ("stacked", "finetune"):
            if stage in budget:
                out[f"n{n}/{stage}/test_accuracy"] = budget[stage]["test"]["accuracy"]
        for probe, numbers in (budget.get("probe") or {}).items():
            out[f"n{n}/probe/{probe}/test_accuracy"] = numbers["accuracy"]
    return out


def hparam(value: Any) -> int | float | str:
    """A setting as the hparams dashboard takes it: numbers and text as they are; True,
    False and None as the command line spells them (torch would make a number of a flag and
    drop a None); lists and dicts as JSON."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _writer_class() -> Any:
    """torch's SummaryWriter, or None (saying so once) when tensorboard is not installed."""
    global _said_missing
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _said_missing:
            print(MISSING, file=sys.stderr, flush=True)
            _said_missing = True
        return None
    return SummaryWriter


class Board:
    """The event files of one run folder; `folder` None (or tensorboard missing): a board
    that writes nothing. The writer opens on the first write."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.writer: Any = None
        self.last: dict[str, int] = {}

    def _open(self) -> bool:
        """Whether there is a writer (opened now if need be)."""
        if self.writer is None and self.folder is not None:
            writer = _writer_class()
            if writer is None:
                self.folder = None
                return False
            self.last = last_steps(self.folder)
            self.writer = writer(log_dir=str(self.folder), max_queue=100, flush_secs=60)
        return self.writer is not None

    def _new(self, tag: str, step: int) -> bool:
        """Whether `tag` has nothing at `step` or after yet (and is then written there)."""
        if not self._open() or step <= self.last.get(tag, -1):
            return False
        self.last[tag] = step
        return True

    def scalar(self, name: str, value: float, step: int) -> None:
        """The metric `name` (the protocol's name, see `tag_of`) at `step`."""
        tag = tag_of(name)
        if self._new(tag, int(step)):
            self.writer.add_scalar(tag, float(value), int(step))

    def tee(self, log_fn: LogFn) -> LogFn:
        """`log_fn`, which also writes every metric here."""

        def both(name: str, value: float, step: int) -> None:
            log_fn(name, value, step)
            self.scalar(name, value, step)

        return both

    def pictures(self, step: int) -> None:
        """The run folder's reconstructions and decoder filters (those that exist) at `step`."""
        from PIL import Image

        for name, tag in ((RECONSTRUCTIONS, "reconstructions"), (FILTERS, "decoder_filters")):
            path = None if self.folder is None else self.folder / name
            if path is not None and path.is_file() and self._new(f"pretrain/{tag}", step):
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self.writer.add_image(f"pretrain/{tag}", pixels, step, dataformats="HWC")
        self.flush()

    def hparams(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        """The settings as hyperparameters, the result's test numbers as their metrics."""
        if not self._open():
            return
        from torch.utils.tensorboard.summary import hparams

        settings = {key: hparam(value) for key, value in config.items()}
        for summary in hparams(settings, final_metrics(result)):
            self.writer.file_writer.add_summary(summary)
        self.flush()

    def flush(self) -> None:
        """Write what is queued to disk (after every epoch)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a later write opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
