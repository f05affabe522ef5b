"""The one training engine: pretraining, the stacked head and end-to-end fine-tuning.

What differs between the three is passed in as a `Stage` (which parameters train, the
optimizer and the loss); `fit` is the loop over epochs of `train_step`, with validation,
early stopping (`EarlyStopping`), its output (`progress`: bars on a terminal, plain lines
elsewhere) and the state that lets an interrupted
stage continue exactly (`TrainingState`).

Under torchrun (a process group of more than one process, see `gksparse.training.distributed`),
`fit` trains with DistributedDataParallel: `batch_size` stays the global batch, every rank
draws the same shuffled order and takes its contiguous share of each global batch, and each
rank's loss is weighted (`losses.loss_weight`) so that the averaged gradient is the gradient
of the loss of the whole global batch. `evaluate` gives whole batches to the ranks in turn
and sums the results. Dropout draws different noise on every rank (not the single
process's noise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.containers import Videos
from . import distributed
from .batches import batches, load_batch
from .losses import (
    Batch,
    ClassificationLoss,
    LossFn,
    PretrainLoss,
    balanced_class_weights,
    loss_weight,
    pretrain_loss,
)
from .optim import clip_grad_norm_
from .progress import PROGRESS_ENV, StepLines, epoch_line, show_bars
from .runtime import default_device
from .stage import Stage
from .state import EarlyStopping, TrainingState

__all__ = [
    "PROGRESS_ENV",
    "Batch",
    "ClassificationLoss",
    "EarlyStopping",
    "LossFn",
    "Stage",
    "TrainingDiverged",
    "TrainingState",
    "autocast",
    "balanced_class_weights",
    "batches",
    "default_device",
    "epoch_line",
    "evaluate",
    "fit",
    "pretrain_loss",
    "show_bars",
    "train_step",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled; a no-op context otherwise."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class StageLoss(nn.Module):
    """`loss(model, batch)` as a module's forward, so that DDP sees the pass it syncs."""

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss(self.model, batch)


@contextmanager
def trainable_only(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Within the block only `params` of `model` take gradients; the flags are restored."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


# -- one step -----------------------------------------------------------------------------
def train_step(
    model: nn.Module,
    stage: Stage,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    runner: nn.Module | None = None,
    device: torch.device | None = None,
    use_autocast: bool = False,
    size: int | None = None,
    at: tuple[int, int] = (1, 1),
    after_backward: Callable[[], None] | None = None,
) -> float:
    """One optimisation step of `stage` on `batch`; returns the batch's mean loss.

    The loss (under bf16 autocast when `use_autocast`), its backward, Keras' global-norm
    clipping (`stage.clipnorm`) and the optimizer's step. `runner`: the module that computes
    the loss, `StageLoss(model, stage.loss)` by default, or its DDP wrapper (`distributed.wrap`):
    under a process group each rank's loss is weighted so that the averaged gradient is the
    global batch's of `size` videos, and the returned loss is the global batch's.
    `after_backward` is called between the backward pass and the clipping (e.g. to read the
    raw gradients). Raises `TrainingDiverged` (naming epoch and step `at`) on a NaN or
    infinite loss, before any update.
    """
    device = device or batch["video"].device
    runner = runner or StageLoss(model, stage.loss)
    with autocast(device, use_autocast):
        loss = runner(batch)
    if distributed.is_distributed():
        a, b = distributed.shard_bounds(size or len(batch["video"]), *_rank_world())
        weight = loss_weight(stage.loss, model, batch) if b > a else 0.0
        loss, value = distributed.weigh_shard(loss, weight)
    else:
        value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(_diverged(stage.name, value, *at, batch))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward()
    if stage.clipnorm:
        clip_grad_norm_(stage.params, stage.clipnorm)
    optimizer.step()
    return value


def _rank_world() -> tuple[int, int]:
    return distributed.rank(), distributed.world_size()


# The videos are float32 in [0, 1]; ZCA whitening maps a frame's deviation from the mean
# (norm at most sqrt(D)) to a norm of at most sqrt(D / epsilon): 1.8e3 for 32x32x3 frames at
# the default epsilon 1e-3, and a few tens in practice. An input beyond this bound is no
# video of ours but damaged data, whatever the learning rate.
INPUT_BOUND = 1e4


def _diverged(stage: str, value: float, epoch: int, step: int, batch: Batch) -> str:
    """Why a loss became NaN or infinite: the input batch itself (NaN, infinite or values
    beyond `INPUT_BOUND`, counted over every rank's share), or else the training."""
    where = f"the {stage} loss became {value} at epoch {epoch}, step {step}"
    faults = [_input_faults(batch["video"])]
    if distributed.is_distributed():  # every rank is here: the loss is the global batch's
        faults = distributed.all_gather_object(faults[0])
    nan, inf, big = (sum(f[i] for f in faults) for i in range(3))
    largest = max(f[3] for f in faults)
    found = [f"{nan} NaN value{'s' * (nan != 1)}"] * (nan > 0)
    found += [f"{inf} infinite value{'s' * (inf != 1)}"] * (inf > 0)
    if big:
        found.append(
            f"{big} value{'s' * (big != 1)} up to {largest:.2g}, far outside the data's range "
            "(videos lie in [0, 1], within a few tens once whitened)"
        )
    if found:
        return (
            f"{where}: the input batch holds {' and '.join(found)}, so the data, not the "
            "training, is at fault; check it or generate it again (remove the cached videos "
            "with `python -m gksparse.cache clear`, and check zca_epsilon, which must be >= 0)."
        )
    return f"{where}; lower the learning rate, enable clipping (clipnorm=1) or check the data."


def _input_faults(video: torch.Tensor) -> tuple[int, int, int, float]:
    """The NaN count, infinite count, count of finite values beyond `INPUT_BOUND` and the
    largest finite magnitude in `video`."""
    video = video.detach()
    finite = torch.isfinite(video)
    size = video.abs().where(finite, torch.zeros((), dtype=video.dtype, device=video.device))
    return (
        int(torch.isnan(video).sum()),
        int(torch.isinf(video).sum()),
        int((size > INPUT_BOUND).sum()),
        float(size.max()) if size.numel() else 0.0,
    )


# -- evaluation ---------------------------------------------------------------------------
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
    lifetime sparsity ranks over a whole batch, as one process does: a `PretrainLoss` ranks
    locally here) and the sums of loss, correct predictions and videos
    are added over the ranks: every rank gets the result. `progress` shows a transient
    progress bar (on rank 0) labelled `desc`.
    """
    if isinstance(loss, PretrainLoss):  # every rank holds whole batches: rank within them
        loss = loss.local()
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    rank, world = _rank_world()
    pin = device.type == "cuda"
    n = len(data)
    starts = range(rank * batch_size, n, world * batch_size)
    bar = tqdm(starts, desc=desc, leave=False, disable=not progress or not distributed.is_main())
    try:
        for start in bar:
            batch = load_batch(data, np.arange(start, min(start + batch_size, n)), device, pin)
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
    if world > 1:
        total, correct, count = distributed.all_reduce_sum([total, correct, count])
    out = {"loss": total / max(count, 1)}
    if accuracy:
        out["accuracy"] = correct / max(count, 1)
    return out


# -- the loop -----------------------------------------------------------------------------
@dataclass
class _Epochs:
    """What every epoch of one `fit` call shares."""

    model: nn.Module
    stage: Stage
    optimizer: torch.optim.Optimizer
    runner: nn.Module
    generator: torch.Generator
    device: torch.device
    use_autocast: bool
    bars: bool
    lines: bool
    desc: str

    def train(self, data: Videos, epoch: int) -> float:
        """One epoch of steps over `data`, shuffled; returns the mean training loss."""
        self.model.train()
        stage, (rank, world) = self.stage, _rank_world()
        running, seen = 0.0, 0
        steps = math.ceil(len(data) / stage.batch_size)
        plain = StepLines(self.desc, epoch, stage.epochs, steps, self.lines and not self.bars)
        bar = tqdm(
            batches(
                data,
                stage.batch_size,
                self.device,
                shuffle=True,
                generator=self.generator,
                rank=rank,
                world_size=world,
            ),
            total=steps,
            desc=f"{self.desc} {epoch}/{stage.epochs}",
            disable=not self.bars,
            leave=False,
        )
        for step, batch in enumerate(bar, 1):
            size = min(stage.batch_size, len(data) - (step - 1) * stage.batch_size)
            value = train_step(
                self.model,
                stage,
                self.optimizer,
                batch,
                runner=self.runner,
                device=self.device,
                use_autocast=self.use_autocast,
                size=size,
                at=(epoch, step),
            )
            running += value * size
            seen += size
            bar.set_postfix(loss=f"{running / seen:.4g}")
            plain.step(step, running / seen)
        return running / max(seen, 1)


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
    progress: bool | None = None,
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
    `fit` it holds the final state. None: a fresh one. Unless `progress` is False, every
    epoch leaves one line (`desc`, default the stage's name, its losses and time), under
    transient bars when `show_bars(progress)` (True: always; None: on a terminal); without
    bars, an epoch longer than a minute also prints a plain line a minute (`StepLines`).

    With `stage.patience` and `val`, stops when the validation loss has not improved for
    `patience` epochs and restores the trained parameters of the best epoch (`EarlyStopping`).
    Raises `TrainingDiverged` on a NaN or infinite loss. `on_epoch(epoch, record)` is called
    after every epoch (e.g. to log metrics).

    Resuming: after every epoch `save_state(state)` receives the `TrainingState`'s saved
    form; passing it back as `resume` continues exactly where it stopped, so an interrupted
    and resumed stage ends with the same weights as an uninterrupted one.

    With a process group of W > 1 processes (torchrun), every rank calls `fit` with the same
    arguments: the model is wrapped in DistributedDataParallel, `stage.batch_size` is the
    global batch (a multiple of W), rank 0's shuffling generator is used by all, and each
    rank's loss is multiplied by `W * w_r / sum(w)` (`losses.loss_weight`), so that the
    gradient DDP averages is the gradient of the single-process loss of the global batch.
    Reported losses are those of the global batches. Only rank 0 calls `save_state` (with
    every rank's RNG state) and shows progress.
    """
    device = device or next(model.parameters()).device
    model.to(device)
    if distributed.is_distributed():
        distributed.check_global_batch(stage.batch_size)
    with trainable_only(model, stage.params):
        optimizer = optimizer or stage.make_optimizer()
        if generator is None:  # follow torch.manual_seed, as the dropout does
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
        if resume is None:
            state = TrainingState(EarlyStopping(stage.patience))
        else:
            state = TrainingState.restore(resume, stage, optimizer, generator)
        distributed.share_shuffling(generator, state.own_rng)
        main = distributed.is_main()
        lines, bars = progress is not False and main, show_bars(progress) and main
        epochs = _Epochs(
            model,
            stage,
            optimizer,
            distributed.wrap(StageLoss(model, stage.loss), device),
            generator,
            device,
            use_autocast,
            bars,
            lines,
            desc or stage.name,
        )
        try:
            for epoch in range(len(state.history) + 1, stage.epochs + 1):
                if state.stopping.should_stop(state.history):
                    break
                started = time.perf_counter()
                record = {"epoch": epoch, "loss": epochs.train(train, epoch)}
                if val is not None and len(val):
                    val_loss = stage.val_loss or stage.loss
                    scores = evaluate(
                        model,
                        val,
                        val_loss,
                        eval_batch_size or stage.batch_size,
                        device,
                        accuracy=isinstance(val_loss, ClassificationLoss),
                        use_autocast=use_autocast,
                    )
                    record.update({f"val_{key}": value for key, value in scores.items()})
                record["seconds"] = time.perf_counter() - started
                state.history.append(record)
                if lines:
                    tqdm.write(epoch_line(epochs.desc, record, stage.epochs))
                state.stopping.update(record, stage.params)
                if on_epoch is not None:
                    on_epoch(epoch, record)
                if save_state is not None:
                    saved = state.save(stage, optimizer, generator)
                    if saved is not None:
                        save_state(saved)
            state.stopping.restore(stage.params)
        finally:
            del epochs  # drops DDP's hooks before another stage wraps the model again
    return state.history
