"""The tiny models the tests build: 1 x 6 x 6 frames, 8 filters in 4 groups, 3 classes."""

from __future__ import annotations

import torch

from gksparse.model.video import ModelConfig, VideoModel, build_model


def small_config(method: str, **overrides) -> ModelConfig:
    """A tiny model of `method`; `overrides` change any `ModelConfig` field."""
    kw = dict(
        method=method,
        in_channels=1,
        height=6,
        width=6,
        classes=3,
        filters=8,
        enc_kernel=3,
        dec_kernel=3,
        groups=4,
        vgg_weights=None,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


def small_model(method: str, seed: int = 0, **overrides) -> VideoModel:
    """`small_config`'s model with the weights torch draws after `manual_seed(seed)`."""
    torch.manual_seed(seed)
    return build_model(small_config(method, **overrides))
