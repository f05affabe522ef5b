"""What each stage of the protocol trains and how, from a `ProtocolConfig` (METHOD.md 5, 5.1).

Pretraining: encoder and decoder, the method's loss, Adam (Keras' by default). Stacked: the
head on the frozen encoder, cross-entropy, Adam. End-to-end: encoder (VGG19: its last
convolution) and head, SGD with momentum. All three clip as the method's `clipnorm` says;
both classifier stages stop early on the unweighted validation loss.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.seeds import Stream, stream_seed
from ..model.video import VideoModel
from ..training.engine import Stage
from ..training.losses import ClassificationLoss, PretrainLoss, balanced_class_weights
from .config import ProtocolConfig

ADAM_OPTIMIZER = {"keras": "adam", "torch": "torch_adam"}  # `adam=` -> `Stage.optimizer`
CLASSIFIER_STAGES = ("stacked", "finetune")


def pretraining(cfg: ProtocolConfig, model: VideoModel) -> Stage:
    """The pretraining stage: lifetime sparsity over the global batch under torchrun
    unless `global_lifetime=False`."""
    return Stage(
        "pretrain",
        model.trainable("pretrain"),
        PretrainLoss(cfg.global_lifetime),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=ADAM_OPTIMIZER[cfg.adam],
        lr=cfg.lr,
        clipnorm=cfg.clipnorm,
    )


def classifier_losses(
    cfg: ProtocolConfig, labels: np.ndarray, classes: int
) -> tuple[ClassificationLoss, ClassificationLoss]:
    """(the training loss, the validation and test loss): class-weighted training with
    `class_weight='balanced'`; validation and test are always unweighted."""
    plain = ClassificationLoss()
    if cfg.class_weight == "balanced":
        return ClassificationLoss(balanced_class_weights(labels, classes)), plain
    return plain, plain


def classifier(
    cfg: ProtocolConfig,
    model: VideoModel,
    name: str,
    loss: ClassificationLoss,
    val_loss: ClassificationLoss,
) -> Stage:
    """The stacked (`name='stacked'`) or end-to-end (`'finetune'`) stage of a label budget."""
    stacked = name == "stacked"
    return Stage(
        name,
        model.trainable(name),
        loss,
        epochs=cfg.classifier_epochs or cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=ADAM_OPTIMIZER[cfg.adam] if stacked else "sgd",
        lr=cfg.lr if stacked else cfg.finetune_lr,
        momentum=cfg.momentum,
        clipnorm=cfg.clipnorm,
        patience=cfg.patience,
        val_loss=val_loss,
    )


def seed_dropout(cfg: ProtocolConfig, n: int, name: str) -> None:
    """Seed torch's RNG (the dropout) for a classifier stage of budget `n`."""
    stacked = name == "stacked"
    torch.manual_seed(
        stream_seed(cfg.seed, n, Stream.STACKED_DROPOUT if stacked else Stream.FINETUNE_DROPOUT)
    )


def shuffling(cfg: ProtocolConfig, n: int | None = None, name: str = "pretrain") -> torch.Generator:
    """The generator of a stage's batch order (pretraining, or a classifier stage of `n`)."""
    if name == "pretrain":
        return torch.Generator().manual_seed(stream_seed(cfg.seed, Stream.PRETRAIN_SHUFFLE))
    stream = Stream.STACKED_SHUFFLE if name == "stacked" else Stream.FINETUNE_SHUFFLE
    return torch.Generator().manual_seed(stream_seed(cfg.seed, n, stream))


def labeled_split_rng(cfg: ProtocolConfig, n: int) -> np.random.Generator:
    """The generator that draws budget `n`'s labeled split."""
    return np.random.default_rng(stream_seed(cfg.seed, n, Stream.LABELED_SPLIT))
