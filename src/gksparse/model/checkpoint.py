"""Checkpoints that rebuild their own model, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..data.files import atomic_save
from .video import VideoModel, build_model

__all__ = ["atomic_save", "load_checkpoint", "save_checkpoint"]


_PLAIN = (type(None), bool, int, float, str)  # exact types: np.float64 subclasses float


def _check_plain(value: Any, where: str) -> None:
    """Raise a TypeError unless `value` is tensors and plain values, all `weights_only` loads."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, f"a key of {where}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint "
            "holds only tensors and plain Python values (it is loaded with weights_only=True), "
            "so convert it first (e.g. float(x), int(x), str(path), torch.as_tensor(array))."
        )


def save_checkpoint(path: str | os.PathLike, model: VideoModel, **extra: Any) -> None:
    """Save `model`'s weights with its `ModelConfig` (and plain `extra` values) to `path`.

    Raises TypeError, before writing anything, for a value that `load_checkpoint` could not
    read back (a numpy scalar or array, a Path, any other object).
    """
    config = model.config.to_dict()
    _check_plain(config, "the model config")
    _check_plain(extra, "extra")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"config": config, "state_dict": state, "extra": extra}, path)


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
    if not (
        isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) and "state_dict" in ckpt
    ):
        found = list(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise RuntimeError(
            f"the checkpoint {path} is corrupt or not a gksparse checkpoint (expected a dict "
            f"with 'config' and 'state_dict', found {found}); delete it and rerun the stage "
            "that wrote it."
        )
    config = dict(ckpt["config"])
    if config.get("vgg_weights"):
        config["vgg_weights"] = None  # the state dict below holds the trained weights
    model = build_model(config)
    model.load_state_dict(ckpt["state_dict"])
    model.config.vgg_weights = ckpt["config"].get("vgg_weights")
    return model, ckpt.get("extra", {})
