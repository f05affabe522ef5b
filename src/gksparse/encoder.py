"""Reuse a trained encoder: `load_encoder(run folder)` gives it back in eval mode, with the
model config, the input whitening and the run's config it was trained with.

A run is named by its folder (`results/<dataset>/<id>`), a checkpoint file in it, or the
results folder of its dataset (`results/<dataset>`): that means its newest completed run, so
a script that has just pretrained needs no run id (`latest_run`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .data.zca import ZCA
from .models import ModelConfig


class TrainedEncoder(nn.Module):
    """A trained encoder in eval mode, with what it takes to feed it and read it as the head does.

    encoder:    the model's encoder, `(N, T, C, H, W)` -> `(N, T, F, H, W)` feature maps.
    head:       the model's classifier head; `features` uses its per-frame pooling. Its dense
                layer is trained only in a fine-tuned checkpoint.
    config:     the `ModelConfig` of the checkpoint (input `C = in_channels`, `H`, `W`).
    zca:        the whitening the training videos went through (checkpoint extras
                `zca_mean`, `zca_matrix`), or None.
    run_config: the run's `config.json` (sacred), or {} without one.
    path:       the checkpoint file.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        config: ModelConfig,
        zca: ZCA | None = None,
        run_config: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.config = config
        self.zca = zca
        self.run_config = run_config or {}
        self.path = path
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps: `(N, T, C, H, W)` -> `(N, T, F, H, W)` (whiten `x` first if `zca`)."""
        return self.encoder(x)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One vector per video, as the classifier sees it: `(N, T, C, H, W)` -> `(N, D)`.

        The mean over real frames (`mask` `(N, T)`, None: all) of the 2x2-max-pooled,
        flattened maps (no pooling for VGG19). Because the head's dense layer is linear and
        the head averages logits over frames, `head.dense(features)` equals the model's
        logits in eval mode.
        """
        per_frame = self.head.features(self.encoder(x))  # (N, T, D)
        if mask is None:
            return per_frame.mean(dim=1)
        m = mask.to(per_frame.dtype).unsqueeze(-1)
        return (per_frame * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of the frames the encoder was trained on."""
        c = self.config
        return (c.in_channels, c.height, c.width)


def latest_run(results: str | os.PathLike) -> Path:
    """The newest completed run of a results folder: `results/<dataset>/<id>` for the largest
    numeric `<id>` whose `run.json` says status COMPLETED.

    Runs are ordered by their number (sacred's run id), not by time: a run resumed later
    stays where it was numbered. Running, failed or interrupted runs and folders with an
    unreadable `run.json` are passed over; a FileNotFoundError says so when none is left.
    """
    results = Path(results).expanduser()
    statuses: dict[int, str] = {}
    for folder in _numbered_runs(results):
        statuses[int(folder.name)] = status = _run_status(folder)
        if status == "COMPLETED":
            return folder
    if not statuses:
        raise FileNotFoundError(
            f"{results} holds no run folders (numbered folders with run.json); pass a run "
            "folder (results/<dataset>/<id>), its dataset's results folder or a .pt file."
        )
    seen = ", ".join(f"{i} {statuses[i]}" for i in sorted(statuses)[-5:])
    raise FileNotFoundError(
        f"{results} holds no completed run (newest runs: {seen}); finish or resume one, or "
        "pass a run folder or a .pt file."
    )


def _numbered_runs(folder: Path) -> list[Path]:
    """The run folders directly in `folder` (numeric names, with run.json), newest first."""
    runs = [p for p in folder.iterdir() if p.name.isdigit() and (p / "run.json").is_file()]
    return sorted(runs, key=lambda p: int(p.name), reverse=True)


def _run_status(folder: Path) -> str:
    """sacred's status in `<folder>/run.json` ('COMPLETED', 'FAILED', ...), or 'unreadable'."""
    try:
        status = json.loads((folder / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):  # a damaged record does not count
        return "unreadable"
    return status if isinstance(status, str) else "unreadable"


def _is_results_folder(folder: Path) -> bool:
    """A folder of numbered runs rather than one run (no checkpoint or run record itself)."""
    if any(folder.glob("*.pt")) or (folder / "run.json").is_file():
        return False
    return bool(_numbered_runs(folder))


def checkpoint_path(run: str | os.PathLike, which: str = "pretrained") -> Path:
    """The checkpoint of a run: `run` itself when it is a file, else `<run>/<which>*.pt`.

    run:   a checkpoint file; a run folder (`results/<dataset>/<id>`); or a results folder
           of numbered runs (`results/<dataset>`), meaning its newest completed run
           (`latest_run`).
    which: the checkpoint's name or its start ('pretrained', 'finetune_n300', 'stacked',
           ...): an exact `<which>.pt` wins, otherwise exactly one `<which>*.pt` must exist.
    """
    path = Path(run).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a run folder nor a checkpoint file.")
    if _is_results_folder(path):
        path = latest_run(path)
    exact = path / f"{which}.pt"
    if exact.is_file():
        return exact
    matches = sorted(path.glob(f"{which}*.pt"))
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(p.name for p in matches or sorted(path.glob("*.pt"))) or "none"
    if names == "none" and not (path / "run.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a run folder (no checkpoints, no run.json); pass a run folder "
            "(results/<dataset>/<id>), its dataset's results folder or a .pt file."
        )
    if not matches:
        raise FileNotFoundError(
            f"the run folder {path} has no {which}*.pt checkpoint (its checkpoints: {names}); "
            "its run may not have reached that stage yet."
        )
    raise ValueError(
        f"the run folder {path} has several {which}*.pt checkpoints ({names}); pass the file "
        "or its name without '.pt' as which."
    )


def zca_to_extra(zca: ZCA | None) -> dict[str, Any]:
    """Checkpoint extras for a whitening (`save_checkpoint(path, model, **zca_to_extra(zca))`)."""
    if zca is None:
        return {}
    return {
        "zca_mean": torch.from_numpy(np.asarray(zca.mean, np.float32)),
        "zca_matrix": torch.from_numpy(np.asarray(zca.matrix, np.float32)),
        "zca_epsilon": float(zca.epsilon),
    }


def zca_from_extra(extra: dict[str, Any]) -> ZCA | None:
    """The whitening stored in checkpoint extras (`zca_mean`, `zca_matrix`), or None."""
    if extra.get("zca_mean") is None or extra.get("zca_matrix") is None:
        return None
    mean = np.asarray(torch.as_tensor(extra["zca_mean"]).float().numpy()).reshape(-1)
    matrix = np.asarray(torch.as_tensor(extra["zca_matrix"]).float().numpy())
    if matrix.shape != (mean.size, mean.size):
        raise ValueError(
            f"the checkpoint's zca_matrix is {tuple(matrix.shape)}, expected "
            f"({mean.size}, {mean.size}) for its zca_mean."
        )
    return ZCA(mean, matrix, float(extra.get("zca_epsilon", math.nan)))


def load_encoder(
    run: str | os.PathLike,
    which: str = "pretrained",
    *,
    map_location: str | torch.device = "cpu",
) -> TrainedEncoder:
    """The trained encoder of a run folder (`results/<dataset>/<run id>/`), of the newest
    completed run of a results folder (`results/<dataset>/`) or of a `.pt` file.

    which: the checkpoint in the folder: 'pretrained' (default), or e.g. 'finetune_n300' for
           the encoder fine-tuned end-to-end with 300 labels (see `checkpoint_path`).
    Returns a `TrainedEncoder` in eval mode with its `config`, `zca` and `run_config`.
    """
    path = checkpoint_path(run, which)
    model, extra = load_checkpoint(path, map_location=map_location)
    run_config_file = path.parent / "config.json"
    run_config = json.loads(run_config_file.read_text()) if run_config_file.is_file() else {}
    return TrainedEncoder(
        model.encoder, model.head, model.config, zca_from_extra(extra), run_config, path
    )


__all__ = [
    "TrainedEncoder",
    "checkpoint_path",
    "latest_run",
    "load_encoder",
    "zca_from_extra",
    "zca_to_extra",
]
