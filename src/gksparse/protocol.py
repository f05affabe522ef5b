"""The paper's protocol (METHOD.md section 5): pretrain, then per label budget stacked and
end-to-end classification. Knows nothing of sacred: it reads a `ProtocolConfig`, writes
into a run folder and reports metrics through a callback.

Run folder layout (all files written atomically; a killed run resumes from it):
    result.json             the result so far, rewritten as each stage finishes
    pretrained.pt           encoder + decoder + head after pretraining (or the random init)
    pretrain_state.pt       the pretraining stage's state after its last finished epoch
    stacked_n{n}.pt         the classifier after the stacked stage of budget n
    finetune_n{n}.pt        the classifier after end-to-end fine-tuning of budget n
    reconstructions.png     input videos beside their reconstructions / predictions
    decoder_filters.png     the decoder's filters, one row per group for group methods

Under torchrun every rank runs the protocol with the same config: training and evaluation
are split over the ranks (`train.fit`, `train.evaluate`), seeds and labeled splits follow
from the config alone, rank 0 alone writes into the run folder, and whatever is read back
from it (the result so far, checkpoints, the pretraining state) is read by rank 0 and sent
to the others, so that only rank 0 needs the folder.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import data as datasets
from . import distributed, runtime
from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .data.videos import VideoData, Videos
from .encoder import zca_to_extra
from .models import ModelConfig, VideoModel, build_model, get_method
from .train import (
    ClassificationLoss,
    Stage,
    autocast,
    balanced_class_weights,
    batches,
    default_device,
    evaluate,
    fit,
    pretrain_loss,
)

log = logging.getLogger(__name__)
LogFn = Callable[[str, float, int], None]


@dataclass
class ProtocolConfig:
    """One run: one dataset x one method x one seed (METHOD.md sections 4-6)."""

    dataset: str
    method: str
    seed: int = 0
    num_labeled: list[int] = field(default_factory=lambda: [300])
    classify_dataset: str | None = None  # None: the dataset itself (necanimal: coil100)
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    zca_epsilon: float = 1e-3
    batch_size: int = 30
    filters: int = 64
    enc_kernel: int = 3
    dec_kernel: int = 11
    groups: int = 16
    spatial: bool = True  # False: the 'nospatial' ablation (k_spatial = H*W)
    lifetime: bool = True  # False: the 'nolifetime' ablation (k_lifetime = batch*T)
    epochs: int = 50
    classifier_epochs: int | None = None  # most epochs of each classifier stage; None: epochs
    patience: int = 5
    lr: float = 1e-4
    finetune_lr: float = 1e-5
    momentum: float = 0.9
    clipnorm: float | None = None
    device: str | None = None  # None: CUDA when available
    autocast: bool | None = None  # bf16 autocast; None: on for CUDA only
    eval_batch_size: int = 100
    pictures: int = 4
    feature_cache_gb: float = 2.0  # stacked stage: cache encoder features up to this size
    vgg_weights: str | None = "IMAGENET1K_V1"
    progress: bool = True
    data_options: dict[str, Any] = field(default_factory=dict)  # more options of the loader
    # Under torchrun: lifetime sparsity over the whole global batch (True), or over each
    # process's shard (False: the per-process behaviour of the original code).
    global_lifetime: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtocolConfig:
        """Build from a larger dict (e.g. sacred's config), ignoring keys it does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def write_json(obj: Any, path: Path) -> None:
    """Write `obj` as JSON to `path` atomically (temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _seed(*parts: int) -> int:
    """A reproducible 63-bit seed for one stage of one run."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class FeatureHead(nn.Module):
    """The classifier head reading cached encoder features `(N, T, D, 1, 1)`.

    Lets the stacked stage train the head on features computed once (the encoder is frozen
    and has no dropout), through the same engine and loss as the whole model.
    """

    def __init__(self, model: VideoModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.logits(feats.flatten(2), mask)


@torch.no_grad()
def encode_features(
    model: VideoModel, data: Videos, batch_size: int, device: torch.device, use_autocast: bool
) -> Videos:
    """The head's inputs for every video: `Videos` of `(N, T, D, 1, 1)` float32 features."""
    model.eval()
    out = []
    for batch in batches(data, batch_size, device):
        with autocast(device, use_autocast):
            f = model.head.features(model.encoder(batch["video"]))
        out.append(f.float().cpu().numpy())
    feats = np.concatenate(out)[..., None, None]
    return Videos(feats, data.labels, data.mask)


class Protocol:
    """Runs the protocol for one `ProtocolConfig` into `run_dir`, resuming what is there.

    Under torchrun, joins the process group (`distributed.setup`) if the caller has not;
    only rank 0 writes files, calls `log_fn` and shows progress.
    """

    def __init__(
        self, cfg: ProtocolConfig, run_dir: str | os.PathLike, log_fn: LogFn | None = None
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        device = torch.device(cfg.device) if cfg.device else default_device()
        distributed.setup(device)
        self.device = distributed.local_device(device)
        self.main = distributed.is_main()
        world = distributed.world_size()
        if cfg.batch_size % world:
            raise ValueError(
                f"batch_size={cfg.batch_size} is the global batch, split evenly over {world} "
                f"processes; choose a multiple of {world}."
            )
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_fn = (log_fn if self.main else None) or (lambda name, value, step: None)
        self.progress = cfg.progress and self.main
        self.method = get_method(cfg.method)
        # allocator, channels-last; bf16 autocast by default on CUDA only
        self.settings = runtime.configure(self.device, autocast=cfg.autocast)
        self.use_autocast = self.settings.autocast
        self.result: dict[str, Any] = distributed.run_on_main(self._read_result)

    # -- bookkeeping ---------------------------------------------------------------------
    def _read_result(self) -> dict[str, Any]:
        path = self.run_dir / "result.json"
        return json.loads(path.read_text()) if path.is_file() else {"pretrain": None, "budgets": {}}

    def save_result(self) -> None:
        if self.main:
            write_json(self.result, self.run_dir / "result.json")

    def load_model(self, path: Path) -> VideoModel:
        """The checkpoint at `path` (read by rank 0 and sent to the other ranks)."""
        if distributed.is_distributed():
            data = distributed.run_on_main(path.read_bytes)
            if not self.main:
                with tempfile.TemporaryDirectory() as tmp:
                    copy = Path(tmp) / path.name
                    copy.write_bytes(data)
                    return runtime.prepare_model(load_checkpoint(copy)[0], self.settings)
        return runtime.prepare_model(load_checkpoint(path)[0], self.settings)

    def _log_history(self, prefix: str, history: list[dict[str, float]]) -> None:
        for rec in history:
            for key, value in rec.items():
                if key != "epoch":
                    self.log_fn(f"{prefix}.{key}", value, rec["epoch"])

    # -- data ----------------------------------------------------------------------------
    def load_data(self) -> tuple[VideoData, VideoData]:
        """(pretraining data, classification data)."""
        c = self.cfg
        kw = dict(
            data_dir=c.data_dir,
            train_size=c.train_size,
            test_size=c.test_size,
            seed=c.seed,
            zca_epsilon=c.zca_epsilon,
            progress=self.progress,
        )
        with distributed.main_first():  # rank 0 fills the data cache, the others read it
            if c.dataset == "videos":  # your own folder (experiments/videos.py)
                from .data.videofolder import load_folder

                pre = load_folder(**kw, **c.data_options)
                return pre, pre
            pre = datasets.load(c.dataset, **kw)
            name = c.classify_dataset or c.dataset
            cls = pre if name == c.dataset else datasets.load(name, **kw)
            return pre, cls

    def model_config(self, pre: VideoData, cls: VideoData) -> ModelConfig:
        c = self.cfg
        n, t, ch, h, w = pre.train.videos.shape
        return ModelConfig(
            method=c.method,
            in_channels=ch,
            height=h,
            width=w,
            classes=max(cls.num_classes, 1),
            filters=c.filters,
            enc_kernel=c.enc_kernel,
            dec_kernel=c.dec_kernel,
            groups=c.groups,
            k_spatial=1 if c.spatial else h * w,
            k_lifetime=1 if c.lifetime else c.batch_size * t,
            vgg_weights=c.vgg_weights,
            extra={"dataset": c.dataset, "classify_dataset": c.classify_dataset or c.dataset},
        )

    # -- stages --------------------------------------------------------------------------
    def pretrain(self, pre: VideoData, model_cfg: ModelConfig) -> VideoModel:
        """Pretrain (or, for methods without pretraining, just initialise) and save the model."""
        c, path = self.cfg, self.run_dir / "pretrained.pt"
        if distributed.run_on_main(path.is_file) and self.result.get("pretrain") is not None:
            log.info("pretraining already done: loading %s", path)
            return self.load_model(path)
        torch.manual_seed(_seed(c.seed, 0))
        model = runtime.prepare_model(build_model(model_cfg), self.settings)
        summary: dict[str, Any] = {"pretrained": self.method.target is not None}
        if self.method.target is not None:
            state_path = self.run_dir / "pretrain_state.pt"
            resume = distributed.run_on_main(
                lambda: torch.load(state_path, weights_only=True) if state_path.is_file() else None
            )
            stage = Stage(
                "pretrain",
                model.trainable("pretrain"),
                pretrain_loss,
                epochs=c.epochs,
                batch_size=c.batch_size,
                lr=c.lr,
                clipnorm=c.clipnorm,
            )
            history = fit(
                model,
                stage,
                pre.train,
                device=self.device,
                use_autocast=self.use_autocast,
                generator=torch.Generator().manual_seed(_seed(c.seed, 1)),
                progress=self.progress,
                on_epoch=lambda e, r: self._log_history("pretrain", [r]),
                resume=resume,
                save_state=lambda s: atomic_save(s, state_path),
            )
            ev = dict(batch_size=c.batch_size, device=self.device, use_autocast=self.use_autocast)
            started = time.perf_counter()
            summary.update(
                epochs=len(history),
                history=[r["loss"] for r in history],
                train_loss=evaluate(model, pre.train, pretrain_loss, **ev)["loss"],
                test_loss=evaluate(model, pre.test, pretrain_loss, **ev)["loss"],
            )
            self.log_fn("pretrain.train_loss", summary["train_loss"], len(history))
            self.log_fn("pretrain.test_loss", summary["test_loss"], len(history))
            self.log_fn("pretrain.evaluate_seconds", time.perf_counter() - started, len(history))
            self.save_pictures(model, pre)
        if self.main:
            save_checkpoint(path, model, **zca_to_extra(pre.zca))
        self.result["pretrain"] = summary
        self.save_result()
        if self.main:
            (self.run_dir / "pretrain_state.pt").unlink(missing_ok=True)
        return model

    def save_pictures(self, model: VideoModel, pre: VideoData) -> None:
        """Reconstructions of a few test videos and the decoder's filters (rank 0 only)."""
        from . import plots

        k = min(self.cfg.pictures, len(pre.test))
        if k <= 0 or not self.main:
            return
        sample = pre.test.subset(np.arange(k))
        x = torch.from_numpy(sample.videos).to(self.device)
        mask = None if sample.mask is None else torch.from_numpy(sample.mask).to(self.device)
        model.eval()
        with torch.no_grad(), distributed.global_lifetime(False):  # rank 0 alone
            out, _ = model.reconstruct(x, mask)
        plots.save_reconstructions(
            sample.videos,
            out.float().cpu().numpy(),
            self.run_dir / "reconstructions.png",
            shift=1 if self.method.target == "next" else 0,
            mask=sample.mask,
        )
        plots.save_filters(
            model.decoder.weight.detach().float().cpu().numpy(),
            self.run_dir / "decoder_filters.png",
            groups=self.cfg.groups if self.method.sparsity == "group" else 1,
        )

    def classify(self, cls: VideoData, n: int) -> dict[str, Any]:
        """Stacked then end-to-end classification with `n` labels; returns both triples."""
        c = self.cfg
        rng = np.random.default_rng(_seed(c.seed, n, 2))
        train, val, test = cls.labeled_split(n, rng)
        model = self.load_model(self.run_dir / "pretrained.pt")
        weighted = ClassificationLoss(balanced_class_weights(train.labels, cls.num_classes))
        plain = ClassificationLoss()
        out: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "n_test": len(test)}
        ev = dict(batch_size=c.eval_batch_size, device=self.device, use_autocast=self.use_autocast)
        for name in ("stacked", "finetune"):
            path = self.run_dir / f"{name}_n{n}.pt"
            stage = Stage(
                name,
                model.trainable(name),
                weighted,
                epochs=c.classifier_epochs or c.epochs,
                batch_size=c.batch_size,
                optimizer="adam" if name == "stacked" else "sgd",
                lr=c.lr if name == "stacked" else c.finetune_lr,
                momentum=c.momentum,
                clipnorm=None if name == "stacked" else c.clipnorm,
                patience=c.patience,
                val_loss=plain,
            )
            torch.manual_seed(_seed(c.seed, n, 3 if name == "stacked" else 4))
            gen = torch.Generator().manual_seed(_seed(c.seed, n, 5 if name == "stacked" else 6))
            kw = dict(
                device=self.device,
                use_autocast=self.use_autocast,
                generator=gen,
                eval_batch_size=c.eval_batch_size,
                progress=self.progress,
            )
            if name == "stacked" and self.can_cache_features(train, val, model):
                started = time.perf_counter()
                ftrain, fval = (
                    encode_features(model, s, c.eval_batch_size, self.device, self.use_autocast)
                    for s in (train, val)
                )
                self.log_fn(f"n{n}.{name}.features_seconds", time.perf_counter() - started, 0)
                history = fit(FeatureHead(model), stage, ftrain, fval, **kw)
            else:
                history = fit(model, stage, train, val, **kw)
            self._log_history(f"n{n}.{name}", history)
            started = time.perf_counter()
            out[name] = {
                "epochs": len(history),
                **{
                    split: evaluate(model, s, plain, accuracy=True, **ev)
                    for split, s in (("train", train), ("val", val), ("test", test))
                },
            }
            for split in ("train", "val", "test"):
                for key, value in out[name][split].items():
                    self.log_fn(f"n{n}.{name}.{split}_{key}", value, len(history))
            seconds = time.perf_counter() - started
            self.log_fn(f"n{n}.{name}.evaluate_seconds", seconds, len(history))
            if self.main:
                save_checkpoint(path, model, n=n, stage=name)
        return out

    def can_cache_features(self, train: Videos, val: Videos, model: VideoModel) -> bool:
        """Whether the stacked stage may train the head on features computed once."""
        if self.method.input_dropout:  # the frozen encoder still draws dropout noise
            return False
        t = train.videos.shape[1]
        d = model.head.dense.in_features
        return (len(train) + len(val)) * t * d * 4 <= self.cfg.feature_cache_gb * 2**30

    # -- the whole protocol --------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Pretrain, then stacked + end-to-end for every label budget; returns the result."""
        with distributed.global_lifetime(self.cfg.global_lifetime):
            pre, cls = self.load_data()
            self.pretrain(pre, self.model_config(pre, cls))
            if cls.split == "none" and self.cfg.num_labeled:
                log.warning("%s has no labels: pretraining only", cls.name)
                return self.result
            for n in self.cfg.num_labeled:
                if str(n) in self.result["budgets"]:
                    log.info("label budget %d already done", n)
                    continue
                self.result["budgets"][str(n)] = self.classify(cls, n)
                self.save_result()
            return self.result


def run_protocol(
    cfg: ProtocolConfig, run_dir: str | os.PathLike, log_fn: LogFn | None = None
) -> dict[str, Any]:
    """Run (or resume) the protocol of `cfg` in `run_dir`; returns the result dict."""
    return Protocol(cfg, run_dir, log_fn).run()
