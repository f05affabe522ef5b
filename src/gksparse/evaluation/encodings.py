"""The stacked stage on features computed once: the encoder is frozen, so its outputs for the
labeled videos can be cached and the head trained on them, through the same engine and loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.containers import Videos
from ..model.video import VideoModel
from ..training.batches import batches
from ..training.engine import autocast


class FeatureHead(nn.Module):
    """The classifier head reading cached encoder features `(N, T, D, 1, 1)`."""

    def __init__(self, model: VideoModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.logits(feats.flatten(2), mask)


@torch.no_grad()
def head_inputs(
    model: VideoModel, data: Videos, batch_size: int, device: torch.device, **options: Any
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Per batch of `data`, in order: the head's per-frame inputs `(B, T, D)` float32 (the
    encoder in eval mode) and the batch. `options`: use_autocast (default False), progress
    (default False), desc. Run it under `torch.no_grad()`."""
    use_autocast = options.get("use_autocast", False)
    progress, desc = options.get("progress", False), options.get("desc", "features")
    model.eval()
    bar = tqdm(
        batches(data, batch_size, device),
        total=-(-len(data) // batch_size),
        desc=desc,
        leave=False,
        disable=not progress,
    )
    for batch in bar:
        with autocast(device, use_autocast):
            f = model.head.features(model.encoder(batch["video"]))
        yield f.float(), batch


@torch.no_grad()
def encode_features(
    model: VideoModel,
    data: Videos,
    batch_size: int,
    device: torch.device,
    use_autocast: bool,
    progress: bool = False,
    desc: str = "features",
) -> Videos:
    """The head's inputs for every video: `Videos` of `(N, T, D, 1, 1)` float32 features."""
    options = dict(use_autocast=use_autocast, progress=progress, desc=desc)
    parts = head_inputs(model, data, batch_size, device, **options)
    feats = np.concatenate([f.cpu().numpy() for f, _ in parts])[..., None, None]
    return Videos(feats, data.labels, data.mask)


def fits_in_cache(model: VideoModel, train: Videos, val: Videos, limit_gb: float) -> bool:
    """Whether the stacked stage may train the head on features computed once: the frozen
    encoder draws no dropout noise, and the features of `train` and `val` fit in `limit_gb`."""
    if model.method.input_dropout:  # the frozen encoder still draws dropout noise
        return False
    t = train.videos.shape[1]
    d = model.head.dense.in_features
    return (len(train) + len(val)) * t * d * 4 <= limit_gb * 2**30
