"""`RunFolder`: the files of one run folder, read and written through one object (the
records through `FolderRecords`, checkpoints and training state here)."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any

import torch

from ...data import files
from ...model.checkpoint import load_checkpoint, save_checkpoint
from ...model.video import VideoModel
from ...training import distributed
from ...training.state import TrainingState
from .records import (
    CHANGES,
    PRETRAIN_STATE,
    PRETRAINED,
    RESULT,
    RUN,
    FolderRecords,
    RecordError,
)


class RunFolder(FolderRecords):
    """One run folder: its records, result, checkpoints, pretraining state, changes, lock."""

    def result(self) -> dict[str, Any]:
        """`read_result()` read by rank 0 and sent to every rank."""
        return distributed.run_on_main(self.read_result)

    def write_result(self, result: dict[str, Any]) -> None:
        """Write `result.json` (rank 0)."""
        if distributed.is_main():
            self.write_json(RESULT, result)

    def finished_budgets(self, result: dict[str, Any] | None = None) -> list[int]:
        """The label budgets whose stages are finished, in the order they ran."""
        result = self.read_result() if result is None else result
        return [int(n) for n in result.get("budgets", {})]

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self, stage: str = PRETRAINED, n: int | None = None) -> Path:
        """The checkpoint of a stage: 'pretrained', or 'stacked' / 'finetune' of budget `n`."""
        return self.path / (f"{stage}.pt" if n is None else f"{stage}_n{n}.pt")

    def has(self, stage: str = PRETRAINED, n: int | None = None) -> bool:
        """Whether that checkpoint exists (rank 0 looks; every rank gets the answer)."""
        return distributed.run_on_main(self.checkpoint(stage, n).is_file)

    def load_model(
        self, stage: str = PRETRAINED, n: int | None = None
    ) -> tuple[VideoModel, dict[str, Any]]:
        """The model and extras of a checkpoint, read by rank 0 and sent to every rank."""
        path = self.checkpoint(stage, n)
        if not distributed.is_distributed():
            return load_checkpoint(path)
        data = distributed.run_on_main(path.read_bytes)
        if distributed.is_main():
            return load_checkpoint(path)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_bytes(data)
            return load_checkpoint(copy)

    def save_model(
        self,
        model: VideoModel,
        stage: str = PRETRAINED,
        n: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Save a stage's checkpoint (rank 0); `extra`: plain values and tensors."""
        if distributed.is_main():
            save_checkpoint(self.checkpoint(stage, n), model, **(extra or {}))

    def find_checkpoint(self, which: str = PRETRAINED) -> Path:
        """`<which>.pt`, else the one `<which>*.pt` ('finetune_n300', 'stacked', ...)."""
        exact = self.path / f"{which}.pt"
        if exact.is_file():
            return exact
        matches = sorted(self.path.glob(f"{which}*.pt"))
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(p.name for p in matches or sorted(self.path.glob("*.pt"))) or "none"
        if names == "none" and not (self.path / RUN).is_file():
            raise FileNotFoundError(
                f"{self.path} is not a run folder (no checkpoints, no run.json); pass a run "
                "folder (results/<dataset>/<id>), its dataset's results folder or a .pt file."
            )
        if not matches:
            raise FileNotFoundError(
                f"the run folder {self.path} has no {which}*.pt checkpoint (its checkpoints: "
                f"{names}); its run may not have reached that stage yet."
            )
        raise ValueError(
            f"the run folder {self.path} has several {which}*.pt checkpoints ({names}); pass "
            "the file or its name without '.pt' as which."
        )

    # -- the pretraining state ---------------------------------------------------------
    def pretraining_started(self, result: dict[str, Any] | None = None) -> bool:
        """Whether pretraining has finished an epoch (a saved state) or ended."""
        result = self.read_result() if result is None else result
        return result.get("pretrain") is not None or (self.path / PRETRAIN_STATE).is_file()

    def read_pretrain_state(self, params: list[torch.nn.Parameter]) -> dict[str, Any] | None:
        """The saved pretraining state for `train.fit(resume=...)` (None when there is none),
        read by rank 0 and sent to every rank; a damaged or foreign file is one sentence."""
        return distributed.run_on_main(lambda: self._read_state(params))

    def _read_state(self, params: list[torch.nn.Parameter]) -> dict[str, Any] | None:
        path = self.path / PRETRAIN_STATE
        if not path.is_file():
            return None
        try:
            state = torch.load(path, weights_only=True)
            if not isinstance(state, dict) or any(k not in state for k in TrainingState.KEYS):
                raise ValueError("it lacks the state of a pretraining stage")
            if [tuple(p.shape) for p in state["params"]] != [tuple(p.shape) for p in params]:
                raise ValueError("its parameters do not fit this run's model")
            return state
        except Exception as e:  # any damage: torch's own errors are of many kinds
            todo = (
                "delete it and resume the run: pretraining then starts again from its first epoch"
            )
            raise RecordError(path, str(e), todo, what="the pretraining state") from None

    def save_pretrain_state(self, state: dict[str, Any]) -> None:
        """Write the pretraining state after an epoch (rank 0)."""
        if distributed.is_main():
            files.atomic_save(state, self.path / PRETRAIN_STATE)

    def clear_pretrain_state(self) -> None:
        """Remove the pretraining state once pretraining has ended (rank 0)."""
        if distributed.is_main():
            (self.path / PRETRAIN_STATE).unlink(missing_ok=True)

    # -- the writer ----------------------------------------------------------------------
    def hold(self) -> None:
        """Create the folder and make this process its only writer (`files.FolderInUse`
        when another process holds it); rank 0 only."""
        if distributed.is_main():
            self.path.mkdir(parents=True, exist_ok=True)
            files.hold_folder(self.path)

    def in_use(self) -> int | None:
        """The pid of another process writing the folder, or None."""
        return files.holder(self.path)

    def record_changes(self, changes: list[tuple[str, Any, Any]]) -> None:
        """Append settings changed on resume (key, old, new) to changes.json, with the time."""
        history = self.read_json(CHANGES, optional=True, todo="delete it and resume") or []
        when = datetime.datetime.now().isoformat(timespec="seconds")
        history += [{"time": when, "key": k, "old": old, "new": new} for k, old, new in changes]
        self.write_json(CHANGES, history)
