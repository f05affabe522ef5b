"""The losses of the three stages, as `LossFn`s: `loss(model, batch) -> scalar`.

Pretraining: the model's own reconstruction or next-frame MSE (`PretrainLoss`); the
classifier stages: cross-entropy of the logits, optionally class-weighted as Keras weighs
(`ClassificationLoss`). `loss_weight` says what a loss's batch mean divides by, which lets
`train.fit` weigh the ranks of a process group so that their gradients average exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Batch = dict[str, torch.Tensor | None]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class PretrainLoss:
    """The model's own pretraining loss (reconstruction or next-frame MSE) on a batch.

    global_lifetime: under a process group, lifetime sparsity ranks over the whole global
    batch (True, as the paper describes); False: over each rank's shard (the original code's
    multi-GPU behaviour). `train.evaluate` always ranks within its whole batches (`local`).
    """

    def __init__(self, global_lifetime: bool = True) -> None:
        self.global_lifetime = global_lifetime

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model.pretrain_loss(batch["video"], batch["mask"], self.global_lifetime)

    def local(self) -> PretrainLoss:
        """The same loss ranking each process's batch on its own."""
        return PretrainLoss(global_lifetime=False)


pretrain_loss = PretrainLoss()


def balanced_class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """scikit-learn's 'balanced' weights: `n_samples / (n_classes * count)`; 0 for absent ones."""
    counts = np.bincount(np.asarray(labels), minlength=classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(classes)
    w[present] = len(labels) / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


class ClassificationLoss:
    """Cross-entropy of the model's logits, optionally class-weighted: a `LossFn`.

    With `weights`, the loss of a batch is `sum_i w[y_i] * loss_i / batch size`, as Keras
    weighs samples (not divided by the sum of the weights, as `F.cross_entropy(weight=)`).
    """

    def __init__(self, weights: torch.Tensor | None = None) -> None:
        self.weights = weights

    def from_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        if self.weights is not None:
            losses = losses * self.weights.to(logits.device)[labels]
        return losses.mean()

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.from_logits(model(batch["video"], batch["mask"]), batch["label"])


def loss_weight(loss: LossFn, model: nn.Module, batch: Batch) -> float:
    """What `loss`'s mean over `batch` divides by, up to a factor shared by all batches.

    Weighting each rank's mean by it makes the ranks' gradients average to the gradient of
    the mean over the whole global batch. A `PretrainLoss` with a mask: the number of real
    target frames (exact for the MSE; the slowness term's mean over pairs of real frames is
    exact without padding, weighted by real frames with it). Any other loss, the weighted
    `ClassificationLoss` included (Keras divides by the batch size): the videos.
    """
    mask = batch.get("mask")
    if isinstance(loss, PretrainLoss) and mask is not None:
        if getattr(getattr(model, "method", None), "target", None) == "next":
            mask = mask[:, :-1] & mask[:, 1:]
        return float(mask.sum())
    return float(len(batch["video"]))
