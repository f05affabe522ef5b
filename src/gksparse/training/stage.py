"""`Stage`: what one training stage trains and how (the engine, `gksparse.training.engine`,
runs any of them; the protocol's three are built in `gksparse.protocol.stages`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .losses import LossFn
from .optim import KerasAdam

OPTIMIZERS = ("adam", "torch_adam", "sgd")


@dataclass
class Stage:
    """What one training stage trains and how.

    name:      'pretrain', 'stacked' or 'finetune' (errors, progress bars).
    params:    the parameters that train; all others are frozen for the stage.
    loss:      `loss(model, batch) -> scalar`.
    optimizer: 'adam' (Keras 2.2.4's Adam, `optim.KerasAdam`, as the reference), 'torch_adam'
               (`torch.optim.Adam`) or 'sgd' (with `momentum`, no Nesterov).
    clipnorm:  Keras' clipnorm: one norm over all gradients of a step, scaled down to it when
               larger (`optim.clip_grad_norm_`); None or 0: off.
    patience:  early stopping on the validation loss, restoring the best weights; None: off.
    val_loss:  the loss reported on validation data (default: `loss`); e.g. unweighted
               cross-entropy when training uses class weights, as Keras did.
    """

    name: str
    params: list[nn.Parameter]
    loss: LossFn
    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    clipnorm: float | None = None
    patience: int | None = None
    val_loss: LossFn | None = None

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return KerasAdam(self.params, lr=self.lr)
        if self.optimizer == "torch_adam":
            return torch.optim.Adam(self.params, lr=self.lr)
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=self.lr, momentum=self.momentum)
        raise ValueError(
            f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}."
        )
