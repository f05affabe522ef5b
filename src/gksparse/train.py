"""The one training engine: pretraining, the stacked head and end-to-end fine-tuning.

What differs between the three is passed in as a `Stage` (which parameters train, the
optimizer and the loss); the loop, clipping, early stopping, NaN check and progress bars
are shared.

Under torchrun (a process group of more than one process, see `gksparse.distributed`),
`fit` trains with DistributedDataParallel: `batch_size` stays the global batch, every rank
draws the same shuffled order and takes its contiguous share of each global batch, and each
rank's loss is weighted (`loss_weight`) so that the averaged gradient is the gradient of the
loss of the whole global batch. `evaluate` gives whole batches to the ranks in turn and sums
the results. Dropout draws different noise on every rank (not the single process's noise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .data.videos import Videos
from .optim import KerasAdam, clip_grad_norm_

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
    the mean over the whole global batch. `pretrain_loss` with a mask: the number of real
    target frames (exact for the MSE; the slowness term's mean over pairs of real frames is
    exact without padding, weighted by real frames with it). Any other loss, the weighted
    `ClassificationLoss` included (Keras divides by the batch size): the videos.
    """
    mask = batch.get("mask")
    if loss is pretrain_loss and mask is not None:
        if getattr(getattr(model, "method", None), "target", None) == "next":
            mask = mask[:, :-1] & mask[:, 1:]
        return float(mask.sum())
    return float(len(batch["video"]))


# -- batches ------------------------------------------------------------------------------
def batches(
    data: Videos,
    batch_size: int,
    device: torch.device,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """Mini-batches of `data` as tensors on `device`: video `(B, T, C, H, W)`, mask, label.

    With `world_size` > 1, yields `rank`'s contiguous share (`distributed.shard_bounds`) of
    every global batch of `batch_size`; all ranks pass the same `generator` state, so they
    split the same global batches. A rank whose share is empty (a last global batch with
    fewer videos than ranks) gets one fully padded video (mask all False) instead, as the
    encoder cannot run on an empty batch: padded frames never win a lifetime contest, and
    `fit` gives that batch a zero weight.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    pin = device.type == "cuda"
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if shuffle:  # sorted reads are faster on memory maps; order within a batch is moot
            idx = np.sort(idx)
        padded = False
        if world_size > 1:
            a, b = distributed.shard_bounds(len(idx), rank, world_size)
            padded = a == b
            idx = idx[:1] if padded else idx[a:b]
        batch = _load_batch(data, idx, device, pin)
        if padded:
            batch["mask"] = torch.zeros(batch["video"].shape[:2], dtype=torch.bool, device=device)
        yield batch


def _load_batch(data: Videos, idx: np.ndarray, device: torch.device, pin: bool) -> Batch:
    """The videos at the sorted indices `idx` as a batch on `device`."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1:
        idx = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous read, cheap on memmaps
    return {
        "video": _to(data.videos[idx], device, pin, torch.float32),
        "mask": None if data.mask is None else _to(data.mask[idx], device, pin),
        "label": None if data.labels is None else _to(data.labels[idx], device, pin, torch.long),
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
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, float]:
    """Mean loss of `model` on `data`, in eval mode, without gradients.

    With `accuracy`, `loss` must be a `ClassificationLoss`, and the accuracy is added.
    With a process group, rank r evaluates the batches r, r + W, r + 2W, ... whole (so its
    lifetime sparsity ranks over a whole batch, as one process does) and the sums of loss,
    correct predictions and videos are added over the ranks: every rank gets the result.
    `progress` shows a transient progress bar (on rank 0) labelled `desc`.
    """
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    rank, world = distributed.rank(), distributed.world_size()
    pin = device.type == "cuda"
    n = len(data)
    starts = range(rank * batch_size, n, world * batch_size)
    bar = tqdm(starts, desc=desc, leave=False, disable=not progress or not distributed.is_main())
    try:
        for start in bar:
            batch = _load_batch(data, np.arange(start, min(start + batch_size, n)), device, pin)
            with autocast(device, use_autocast), distributed.global_lifetime(False):
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
    if world > 1:
        total, correct, count = distributed.all_reduce_sum([total, correct, count])
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
    optimizer: torch.optim.Optimizer | None = None,
    desc: str | None = None,
) -> list[dict[str, float]]:
    """Train `stage.params` of `model` on `train`; return one record per epoch: `epoch`,
    `loss` (mean training loss), `val_loss` and, when `stage.val_loss` (or `stage.loss`) is
    a `ClassificationLoss`, `val_accuracy` (with `val`), and `seconds` (the epoch's wall
    time, validation included).

    `optimizer`: one made by `stage.make_optimizer()` and perhaps loaded with an earlier
    state (the reference carries classifier optimizers over between label budgets); after
    `fit` it holds the final state. None: a fresh one. With `progress`, every epoch leaves
    one line (`desc`, default the stage's name, its losses and time) under transient bars.

    With `stage.patience` and `val`, stops when the validation loss has not improved for
    `patience` epochs and restores the trained parameters of the best epoch. Raises
    `TrainingDiverged` on a NaN or infinite loss. `on_epoch(epoch, record)` is called after
    every epoch (e.g. to log metrics).

    Resuming: after every epoch `save_state(state)` receives a dict of tensors and plain
    values (the trained parameters, optimizer, shuffling and dropout RNG states, history);
    passing it back as `resume` continues exactly where it stopped, so an interrupted and
    resumed stage ends with the same weights as an uninterrupted one.

    With a process group of W > 1 processes (torchrun), every rank calls `fit` with the same
    arguments: the model is wrapped in DistributedDataParallel, `stage.batch_size` is the
    global batch (a multiple of W), rank 0's shuffling generator is used by all, and each
    rank's loss is multiplied by `W * w_r / sum(w)` (`loss_weight`), so that the gradient
    DDP averages is the gradient of the single-process loss of the global batch. Reported
    losses are those of the global batches. Only rank 0 calls `save_state` (with every
    rank's RNG state) and shows progress.
    """
    device = device or next(model.parameters()).device
    model.to(device)
    dist_on = distributed.is_distributed()
    rank, world = distributed.rank(), distributed.world_size()
    if dist_on and stage.batch_size % world:
        raise ValueError(
            f"batch_size={stage.batch_size} is the global batch, split evenly over {world} "
            f"processes; choose a multiple of {world}."
        )
    trainable = {id(p) for p in stage.params}
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    if optimizer is None:
        optimizer = stage.make_optimizer()
    desc = desc or stage.name
    show = progress and distributed.is_main()
    val_loss = stage.val_loss or stage.loss
    best_loss, best_epoch, best_params = math.inf, 0, None
    history: list[dict[str, float]] = []
    if generator is None:  # follow torch.manual_seed, as the dropout does
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
    own_rng = False
    if resume is not None:
        with torch.no_grad():
            for p, v in zip(stage.params, resume["params"], strict=True):
                p.copy_(v)
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        own_rng = _restore_rng_state(resume["rng"], rank, world)
        history = list(resume["history"])
        best_loss, best_epoch = resume["best_loss"], resume["best_epoch"]
        best_params = resume["best_params"]
    runner: nn.Module = _StageLoss(model, stage.loss)
    if dist_on:
        generator.set_state(distributed.broadcast_object(generator.get_state()))
        if not own_rng:  # one dropout seed per rank: the same one would repeat its noise
            torch.manual_seed(int(torch.randint(2**62, ()).item()) + rank)
        runner = DistributedDataParallel(
            runner, device_ids=[device] if device.type == "cuda" else None
        )
    eval_bs = eval_batch_size or stage.batch_size
    steps = math.ceil(len(train) / stage.batch_size)
    try:
        for epoch in range(len(history) + 1, stage.epochs + 1):
            if _should_stop(history, best_epoch, stage.patience):
                break
            model.train()
            running, seen = 0.0, 0
            started = time.perf_counter()
            bar = tqdm(
                batches(
                    train,
                    stage.batch_size,
                    device,
                    shuffle=True,
                    generator=generator,
                    rank=rank,
                    world_size=world,
                ),
                total=steps,
                desc=f"{desc} {epoch}/{stage.epochs}",
                disable=not show,
                leave=False,
            )
            for step, batch in enumerate(bar, 1):
                size = min(stage.batch_size, len(train) - (step - 1) * stage.batch_size)
                with autocast(device, use_autocast):
                    loss = runner(batch)
                if dist_on:
                    loss, value = _weigh_shard(loss, stage.loss, model, batch, size)
                else:
                    value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(_diverged(stage.name, value, epoch, step, batch))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stage.clipnorm:
                    clip_grad_norm_(stage.params, stage.clipnorm)
                optimizer.step()
                running += value * size
                seen += size
                bar.set_postfix(loss=f"{running / seen:.4g}")
            record = {"epoch": epoch, "loss": running / max(seen, 1)}
            if val is not None and len(val):
                scores = evaluate(
                    model,
                    val,
                    val_loss,
                    eval_bs,
                    device,
                    accuracy=isinstance(val_loss, ClassificationLoss),
                    use_autocast=use_autocast,
                )
                record.update({f"val_{key}": value for key, value in scores.items()})
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            if show:
                tqdm.write(epoch_line(desc, record, stage.epochs))
            if stage.patience is not None and record.get("val_loss", math.inf) < best_loss:
                best_loss, best_epoch = record["val_loss"], epoch
                best_params = [p.detach().clone() for p in stage.params]
            if on_epoch is not None:
                on_epoch(epoch, record)
            if save_state is not None:
                rng = _get_rng_state()
                if dist_on:  # a collective: every rank takes part, rank 0 saves
                    rng = distributed.all_gather_object(rng)
                if distributed.is_main():
                    save_state(
                        {
                            "params": [p.detach().cpu() for p in stage.params],
                            "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(),
                            "rng": rng,
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
        del runner  # drops DDP's hooks before another stage wraps the model again
        for p, flag in saved_flags:
            p.requires_grad_(flag)
    return history


def epoch_line(desc: str, record: dict[str, float], epochs: int) -> str:
    """One line for an epoch's record: `desc epoch e/E: loss ..., val_loss ..., ... (s)`."""
    parts = [f"loss {record['loss']:.4g}"]
    if "val_loss" in record:
        parts.append(f"val_loss {record['val_loss']:.4g}")
    if "val_accuracy" in record:
        parts.append(f"val_accuracy {100 * record['val_accuracy']:.1f}%")
    seconds = f" ({record['seconds']:.0f} s)" if "seconds" in record else ""
    return f"{desc} epoch {record['epoch']}/{epochs}: {', '.join(parts)}{seconds}"


def _diverged(stage: str, value: float, epoch: int, step: int, batch: Batch) -> str:
    """Why a loss became NaN or infinite: the input itself, or the training."""
    where = f"the {stage} loss became {value} at epoch {epoch}, step {step}"
    if not bool(torch.isfinite(batch["video"]).all()):
        return (
            f"{where}: the input videos hold NaN or infinite values; check the data (and "
            "zca_epsilon, which must be >= 0) and delete the video cache entry if it is damaged."
        )
    return f"{where}; lower the learning rate, enable clipping (clipnorm=1) or check the data."


class _StageLoss(nn.Module):
    """`loss(model, batch)` as a module's forward, so that DDP sees the pass it syncs."""

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss(self.model, batch)


def _weigh_shard(
    local: torch.Tensor, loss: LossFn, model: nn.Module, batch: Batch, size: int
) -> tuple[torch.Tensor, float]:
    """This rank's loss to backpropagate, and the global batch's loss (the same on all ranks).

    local: the mean loss of this rank's share of a global batch of `size` videos. Scaled by
    `W * w_r / sum(w)` (`loss_weight`), whose DDP average over the W ranks is the gradient of
    the global batch's mean. A padded stand-in for an empty share weighs 0.
    """
    rank, world = distributed.rank(), distributed.world_size()
    a, b = distributed.shard_bounds(size, rank, world)
    weight = loss_weight(loss, model, batch) if b > a else 0.0
    weighted = float(local.detach()) * weight if weight else 0.0
    total, weights = distributed.all_reduce_sum([weighted, weight])
    value = total / weights if weights else math.nan
    return local * (world * weight / weights if weights else 0.0), value


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


def _restore_rng_state(saved: dict | list[dict], rank: int, world: int) -> bool:
    """Restore a saved RNG state: one dict, or one per rank (saved by a process group).

    Returns whether this rank got back its own state; otherwise it got rank 0's (or the
    single one) and a process group must still give each rank its own dropout seed.
    """
    if isinstance(saved, dict):
        _set_rng_state(saved)
        return world == 1
    own = len(saved) == world
    _set_rng_state(saved[rank] if own else saved[0])
    return own
