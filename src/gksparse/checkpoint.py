"""Checkpoints that rebuild their own model, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .models import VideoModel, build_model


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, model: VideoModel, **extra: Any) -> None:
    """Save `model`'s weights with its `ModelConfig` (and plain `extra` values) to `path`."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"config": model.config.to_dict(), "state_dict": state, "extra": extra}, path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[VideoModel, dict[str, Any]]:
    """Rebuild the model saved at `path` and load its weights; returns (model, extra).

    Loads with `weights_only=True`: a checkpoint holds tensors and plain values only.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; check the path or rerun the stage.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"the checkpoint {path} is corrupt or not a gksparse checkpoint ({e}); delete it "
            "and rerun the stage that wrote it."
        ) from e
    config = dict(ckpt["config"])
    if config.get("vgg_weights"):
        config["vgg_weights"] = None  # the state dict below holds the trained weights
    model = build_model(config)
    model.load_state_dict(ckpt["state_dict"])
    model.config.vgg_weights = ckpt["config"].get("vgg_weights")
    return model, ckpt.get("extra", {})
