"""The one training engine: pretraining, the stacked head and end-to-end fine-tuning.

What differs between the three is passed in as a `Stage` (which parameters train, the
optimizer and the loss); the loop, clipping, early stopping, NaN check and progress bars
are shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data.videos import Videos

Batch = dict[str, torch.Tensor | None]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled; a no-op context otherwise."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# -- losses -------------------------------------------------------------------------------
def pretrain_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's own pretraining loss (reconstruction or next-frame MSE) on a batch."""
    return model.pretrain_loss(batch["video"], batch["mask"])


def balanced_class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """scikit-learn's 'balanced' weights: `n_samples / (n_classes * count)`; 0 for absent ones."""
    counts = np.bincount(np.asarray(labels), minlength=classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(classes)
    w[present] = len(labels) / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


class ClassificationLoss:
    """Cross-entropy of the model's logits, optionally class-weighted: a `LossFn`."""

    def __init__(self, weights: torch.Tensor | None = None) -> None:
        self.weights = weights

    def from_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = None if self.weights is None else self.weights.to(logits.device)
        return F.cross_entropy(logits.float(), labels, weight=w)

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.from_logits(model(batch["video"], batch["mask"]), batch["label"])


# -- batches ------------------------------------------------------------------------------
def batches(
    data: Videos,
    batch_size: int,
    device: torch.device,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Mini-batches of `data` as tensors on `device`: video `(B, T, C, H, W)`, mask, label."""
    n = len(data)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    pin = device.type == "cuda"
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if not shuffle:
            idx = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous read, cheap on memmaps
        else:
            idx = np.sort(
                idx
            )  # sorted reads are faster on memory maps; order within a batch is moot
        yield {
            "video": _to(data.videos[idx], device, pin, torch.float32),
            "mask": None if data.mask is None else _to(data.mask[idx], device, pin),
            "label": None
            if data.labels is None
            else _to(data.labels[idx], device, pin, torch.long),
        }


def _to(a: np.ndarray, device: torch.device, pin: bool, dtype=None) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # a read-only memory map: torch wants its own copy
        a = a.copy()
    t = torch.from_numpy(a)
    if dtype is not None:
        t = t.to(dtype)
    if pin:
        t = t.pin_memory()
    return t.to(device, non_blocking=pin)


# -- the engine ---------------------------------------------------------------------------
@dataclass
class Stage:
    """What one training stage trains and how.

    name:      label for progress bars and metrics ('pretrain', 'stacked', 'finetune').
    params:    the parameters that train; all others are frozen for the stage.
    loss:      `loss(model, batch) -> scalar`.
    optimizer: 'adam' or 'sgd' (with `momentum`).
    clipnorm:  clip each gradient tensor's norm to this value (Keras' clipnorm); None: off.
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
            return torch.optim.Adam(self.params, lr=self.lr)
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=self.lr, momentum=self.momentum)
        raise ValueError(f"unknown optimizer {self.optimizer!r}; use 'adam' or 'sgd'.")


def clip_each_(params: list[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient so its own L2 norm is at most `max_norm`."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Videos,
    loss: LossFn,
    batch_size: int,
    device: torch.device,
    *,
    accuracy: bool = False,
    use_autocast: bool = False,
) -> dict[str, float]:
    """Mean loss of `model` on `data`, in eval mode, without gradients.

    With `accuracy`, `loss` must be a `ClassificationLoss`, and the accuracy is added.
    """
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    try:
        for batch in batches(data, batch_size, device):
            with autocast(device, use_autocast):
                if accuracy:  # one forward pass for both numbers
                    logits = model(batch["video"], batch["mask"])
                    value = loss.from_logits(logits, batch["label"])
                    correct += int((logits.argmax(dim=1) == batch["label"]).sum())
                else:
                    value = loss(model, batch)
            total += float(value) * len(batch["video"])
            count += len(batch["video"])
    finally:
        model.train(was_training)
    out = {"loss": total / max(count, 1)}
    if accuracy:
        out["accuracy"] = correct / max(count, 1)
    return out


def fit(
    model: nn.Module,
    stage: Stage,
    train: Videos,
    val: Videos | None = None,
    *,
    device: torch.device | None = None,
    use_autocast: bool = False,
    generator: torch.Generator | None = None,
    eval_batch_size: int | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    resume: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
) -> list[dict[str, float]]:
    """Train `stage.params` of `model` on `train`; return one dict of losses per epoch.

    With `stage.patience` and `val`, stops when the validation loss has not improved for
    `patience` epochs and restores the trained parameters of the best epoch. Raises
    `TrainingDiverged` on a NaN or infinite loss. `on_epoch(epoch, record)` is called after
    every epoch (e.g. to log metrics).

    Resuming: after every epoch `save_state(state)` receives a dict of tensors and plain
    values (the trained parameters, optimizer, shuffling and dropout RNG states, history);
    passing it back as `resume` continues exactly where it stopped, so an interrupted and
    resumed stage ends with the same weights as an uninterrupted one.
    """
    device = device or next(model.parameters()).device
    model.to(device)
    trainable = {id(p) for p in stage.params}
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = stage.make_optimizer()
    best_loss, best_epoch, best_params = math.inf, 0, None
    history: list[dict[str, float]] = []
    if generator is None:  # follow torch.manual_seed, as the dropout does
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
    if resume is not None:
        with torch.no_grad():
            for p, v in zip(stage.params, resume["params"], strict=True):
                p.copy_(v)
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        _set_rng_state(resume["rng"])
        history = list(resume["history"])
        best_loss, best_epoch = resume["best_loss"], resume["best_epoch"]
        best_params = resume["best_params"]
    eval_bs = eval_batch_size or stage.batch_size
    steps = math.ceil(len(train) / stage.batch_size)
    try:
        for epoch in range(len(history) + 1, stage.epochs + 1):
            if _should_stop(history, best_epoch, stage.patience):
                break
            model.train()
            running, seen = 0.0, 0
            bar = tqdm(
                batches(train, stage.batch_size, device, shuffle=True, generator=generator),
                total=steps,
                desc=f"{stage.name} {epoch}/{stage.epochs}",
                disable=not progress,
                leave=False,
            )
            for step, batch in enumerate(bar, 1):
                with autocast(device, use_autocast):
                    loss = stage.loss(model, batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"the {stage.name} loss became {value} at epoch {epoch}, step {step}; "
                        "lower the learning rate, enable clipping or check the input data."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stage.clipnorm is not None:
                    clip_each_(stage.params, stage.clipnorm)
                optimizer.step()
                running += value * len(batch["video"])
                seen += len(batch["video"])
                bar.set_postfix(loss=f"{running / seen:.4g}")
            record = {"epoch": epoch, "loss": running / max(seen, 1)}
            if val is not None and len(val):
                record["val_loss"] = evaluate(
                    model,
                    val,
                    stage.val_loss or stage.loss,
                    eval_bs,
                    device,
                    use_autocast=use_autocast,
                )["loss"]
            history.append(record)
            if stage.patience is not None and record.get("val_loss", math.inf) < best_loss:
                best_loss, best_epoch = record["val_loss"], epoch
                best_params = [p.detach().clone() for p in stage.params]
            if on_epoch is not None:
                on_epoch(epoch, record)
            if save_state is not None:
                save_state(
                    {
                        "params": [p.detach().cpu() for p in stage.params],
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "rng": _get_rng_state(),
                        "history": history,
                        "best_loss": best_loss,
                        "best_epoch": best_epoch,
                        "best_params": best_params,
                    }
                )
        if best_params is not None:
            with torch.no_grad():
                for p, b in zip(stage.params, best_params, strict=True):
                    p.copy_(b)
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
    return history


def _should_stop(history: list[dict[str, float]], best_epoch: int, patience: int | None) -> bool:
    """Early stopping: `patience` epochs have passed since the best validation loss."""
    if patience is None or not history or "val_loss" not in history[-1]:
        return False
    return history[-1]["epoch"] - best_epoch >= patience


def _get_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
