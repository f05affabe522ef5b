"""Where a training stage stands: early stopping and the state that resumes it exactly.

`EarlyStopping` watches the validation loss and keeps the best epoch's parameters;
`TrainingState` holds a stage's records and, in its saved form (written after every epoch of
`train.fit`), the parameters, optimizer, shuffling and dropout RNG states, so that an
interrupted and resumed stage ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from . import distributed
from .stage import Stage


@dataclass
class EarlyStopping:
    """Early stopping on the validation loss: stop once `patience` epochs have passed since
    the best one, and end with the trained parameters of the best epoch. None: off."""

    patience: int | None
    best_loss: float = math.inf
    best_epoch: int = 0
    best_params: list[torch.Tensor] | None = None

    def should_stop(self, history: list[dict[str, float]]) -> bool:
        if self.patience is None or not history or "val_loss" not in history[-1]:
            return False
        return history[-1]["epoch"] - self.best_epoch >= self.patience

    def update(self, record: dict[str, float], params: list[nn.Parameter]) -> None:
        """Take the epoch of `record` as the best one if its validation loss is lower."""
        if self.patience is not None and record.get("val_loss", math.inf) < self.best_loss:
            self.best_loss, self.best_epoch = record["val_loss"], record["epoch"]
            self.best_params = [p.detach().clone() for p in params]

    def restore(self, params: list[nn.Parameter]) -> None:
        """Copy the best epoch's values into `params` (if there was a best epoch)."""
        if self.best_params is not None:
            with torch.no_grad():
                for p, b in zip(params, self.best_params, strict=True):
                    p.copy_(b)


@dataclass
class TrainingState:
    """A stage after its last finished epoch: its records and early stopping, plus (in the
    saved form) its parameters, optimizer and RNG states, enough to continue it exactly.

    The saved form (`save`, for `fit(save_state=...)`) is a dict of tensors and plain values
    with the keys `KEYS` and `best_params`; `restore` takes it back.
    """

    KEYS = ("params", "optimizer", "generator", "rng", "history", "best_loss", "best_epoch")

    stopping: EarlyStopping
    history: list[dict[str, float]] = field(default_factory=list)
    own_rng: bool = False  # every rank got back its own RNG state (see `_restore_rng_state`)

    @classmethod
    def restore(
        cls,
        saved: dict,
        stage: Stage,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> TrainingState:
        """Put a saved state back into `stage.params`, `optimizer`, `generator` and torch's
        RNG; returns the stage's records and early stopping as they were."""
        with torch.no_grad():
            for p, v in zip(stage.params, saved["params"], strict=True):
                p.copy_(v)
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        own_rng = _restore_rng_state(saved["rng"], distributed.rank(), distributed.world_size())
        stopping = EarlyStopping(
            stage.patience, saved["best_loss"], saved["best_epoch"], saved["best_params"]
        )
        return cls(stopping, list(saved["history"]), own_rng)

    def save(
        self, stage: Stage, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> dict | None:
        """The saved form on rank 0 (None on the others). Under a process group a collective:
        every rank calls it, and the RNG states of all ranks are kept."""
        rng = _get_rng_state()
        if distributed.is_distributed():
            rng = distributed.all_gather_object(rng)
        if not distributed.is_main():
            return None
        return {
            "params": [p.detach().cpu() for p in stage.params],
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "rng": rng,
            "history": self.history,
            "best_loss": self.stopping.best_loss,
            "best_epoch": self.stopping.best_epoch,
            "best_params": self.stopping.best_params,
        }


def _get_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _restore_rng_state(saved: dict | list[dict], rank: int, world: int) -> bool:
    """Restore a saved RNG state: one dict, or one per rank (saved by a process group).

    Returns whether this rank got back its own state; otherwise it got rank 0's (or the
    single one) and a process group must still give each rank its own dropout seed.
    """
    if isinstance(saved, dict):
        _set_rng_state(saved)
        return world == 1
    own = len(saved) == world
    _set_rng_state(saved[rank] if own else saved[0])
    return own
