"""The records of a run folder (`config.json`, `run.json`, `result.json`, ...): their names,
their errors and `FolderRecords`, which reads them without torch (see the package docstring
for the layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...data import files

CONFIG, RUN, METRICS, COUT = "config.json", "run.json", "metrics.json", "cout.txt"
RESULT, CHANGES = "result.json", "changes.json"
PRETRAINED, PRETRAIN_STATE = "pretrained", "pretrain_state.pt"
RECONSTRUCTIONS, FILTERS = "reconstructions.png", "decoder_filters.png"
RECORDS = (CONFIG, RUN, RESULT)  # any of them makes a folder a run folder
START_AGAIN = "start a new run instead"
STAGE_LABELS = {"stacked": "stacked", "finetune": "end-to-end"}  # as the tables name them


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message is one sentence."""


class RecordError(RunFolderError):
    """A run record that is missing or damaged: `path`, `why` ('missing', 'empty', ...)."""

    def __init__(
        self, path: Path, why: str, todo: str = START_AGAIN, what: str = "the run record"
    ) -> None:
        self.path, self.why = Path(path), why
        state = "is missing" if why == "missing" else f"is damaged ({why})"
        super().__init__(f"{what} {self.path} {state}; {todo}.")


def _why_unreadable(path: Path) -> tuple[Any, str | None]:
    """(the JSON in `path`, None), or (None, why it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
        if text.strip():
            return json.loads(text), None
        return None, "empty"
    except FileNotFoundError:
        return None, "missing"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON at line {e.lineno}, column {e.colno}"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as e:
        return None, e.strerror or type(e).__name__


class FolderRecords:
    """One run folder's JSON and text records, read and written without torch (the report
    reads results with this alone; `RunFolder` adds checkpoints and training state)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- records -----------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds any run record."""
        return any((self.path / name).is_file() for name in RECORDS)

    def read_json(self, name: str, *, optional: bool = False, todo: str = START_AGAIN) -> Any:
        """The JSON record `name`; None when `optional` and missing; else a `RecordError`."""
        value, why = _why_unreadable(self.path / name)
        if why == "missing" and optional:
            return None
        if why is not None:
            raise RecordError(self.path / name, why, todo)
        return value

    def write_json(self, name: str, value: Any, **dump_options: Any) -> None:
        files.write_json(value, self.path / name, **dump_options)

    def write_text(self, name: str, text: str) -> None:
        files.atomic_write_text(self.path / name, text)

    def read_text(self, name: str) -> str:
        """A text record ('' when there is none)."""
        path = self.path / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def config(self) -> dict[str, Any]:
        """The run's settings (`config.json`); a `RecordError` when missing or not a config."""
        config = self.read_json(CONFIG)
        if not isinstance(config, dict) or not isinstance(config.get("dataset"), str):
            raise RecordError(self.path / CONFIG, "not a run's config: no dataset")
        return config

    def record(self, optional: bool = False, todo: str = START_AGAIN) -> dict[str, Any] | None:
        """`run.json`, sacred's record of the run (None when `optional` and missing)."""
        return self.read_json(RUN, optional=optional, todo=todo)

    def status(self) -> str:
        """sacred's status: 'COMPLETED', 'FAILED', 'INTERRUPTED', 'RUNNING', ...; a
        `RecordError` when run.json is missing, damaged or has none."""
        record = self.record()
        status = record.get("status") if isinstance(record, dict) else None
        if not isinstance(status, str):
            raise RecordError(self.path / RUN, "no status")
        return status

    def status_or_unreadable(self) -> str:
        """`status()`, or 'unreadable' for a missing or damaged run.json."""
        try:
            return self.status()
        except RecordError:
            return "unreadable"

    # -- the result --------------------------------------------------------------------
    def read_result(self) -> dict[str, Any]:
        """The result so far (`{"pretrain": None, "budgets": {}}` before the first stage)."""
        todo = "delete it and resume the run: the stages it recorded are then redone"
        result = self.read_json(RESULT, optional=True, todo=todo)
        if result is None:
            return {"pretrain": None, "budgets": {}}
        if not isinstance(result, dict) or not isinstance(result.get("budgets"), dict):
            raise RecordError(self.path / RESULT, "not a result of this protocol", todo)
        return result
