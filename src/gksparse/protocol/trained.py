"""Reuse a trained encoder: `load_encoder(run folder)` gives it back in eval mode, with the
model config, the input whitening and the run's config it was trained with.

A run is named by its folder (`results/<dataset>/<id>`), a checkpoint file in it, or the
results folder of its dataset (`results/<dataset>`): that means its newest completed run, so
a script that has just pretrained needs no run id (`latest_run`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.zca import ZCA
from ..model.checkpoint import load_checkpoint
from ..model.video import ModelConfig, frame_mean
from .rundir.folder import RunFolder
from .rundir.records import CONFIG
from .rundir.runs import is_results_folder, latest_run


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
        return frame_mean(self.head.features(self.encoder(x)), mask)  # (N, T, D) -> (N, D)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of the frames the encoder was trained on."""
        c = self.config
        return (c.in_channels, c.height, c.width)


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
    if is_results_folder(path):
        path = latest_run(path)
    return RunFolder(path).find_checkpoint(which)


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
    run_config = RunFolder(path.parent).read_json(CONFIG, optional=True) or {}
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
