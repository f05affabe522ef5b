"""The paper's protocol (METHOD.md section 5): pretrain, then per label budget stacked and
end-to-end classification. Knows nothing of sacred: it reads a `ProtocolConfig`, keeps its
work in a run folder (`gksparse.protocol.rundir.RunFolder`, which owns the layout) and reports
metrics through a callback. What each stage trains is in `gksparse.protocol.stages`; a killed run
resumes from its folder, finished stages and pretraining epochs are not redone. After the
classifier stages of a budget, unless `probe=False`, a linear and a k-NN probe of the frozen
pretrained encoder (`gksparse.evaluation.vectors`) add `probe` to the budget's result.
Unless `tensorboard=False`, the metrics and pictures also go into TensorBoard event files in
the run folder (`gksparse.protocol.tensorboard`).

Under torchrun every rank runs the protocol with the same config: training and evaluation
are split over the ranks (`train.fit`, `train.evaluate`), seeds and labeled splits follow
from the config alone, rank 0 alone writes into the run folder, and whatever is read back
from it is read by rank 0 and sent to the others, so that only rank 0 needs the folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import data as datasets
from ..data.containers import VideoData, Videos
from ..data.seeds import Stream, stream_seed
from ..data.splits import check_budget
from ..evaluation import vectors
from ..evaluation.encodings import FeatureHead, encode_features, fits_in_cache
from ..model.methods import get_method
from ..model.video import ModelConfig, VideoModel, build_model
from ..training import distributed, runtime
from ..training.engine import Stage, evaluate, fit
from ..training.losses import ClassificationLoss, pretrain_loss
from ..training.progress import show_bars
from . import stages
from .config import ConfigError, ProtocolConfig
from .rundir.folder import RunFolder
from .rundir.records import FILTERS, RECONSTRUCTIONS, STAGE_LABELS
from .tensorboard import Board
from .trained import zca_to_extra

__all__ = ["ConfigError", "Protocol", "ProtocolConfig", "load_data", "run_protocol"]

log = logging.getLogger(__name__)
LogFn = Callable[[str, float, int], None]


class Protocol:
    """Runs the protocol for one `ProtocolConfig` into `run_dir`, resuming what is there.

    Under torchrun, joins the process group (`distributed.setup`) if the caller has not;
    only rank 0 writes files, calls `log_fn` and shows progress. `cfg.progress`: see
    `train.fit` (None: one line per epoch, bars only on a terminal).
    """

    def __init__(
        self, cfg: ProtocolConfig, run_dir: str | os.PathLike, log_fn: LogFn | None = None
    ):
        self.cfg = cfg
        device = runtime.default_device(cfg.device)
        distributed.setup(device)
        self.device = distributed.local_device(device)
        self.main = distributed.is_main()
        distributed.check_global_batch(cfg.batch_size)
        self.folder = RunFolder(run_dir)
        self.folder.hold()  # one writer per run folder
        self.board = Board(self.folder.path if self.main and cfg.tensorboard else None)
        log_fn = (log_fn if self.main else None) or (lambda name, value, step: None)
        self.log_fn = self.board.tee(log_fn)
        self.progress = show_bars(cfg.progress) and self.main  # progress bars
        self.lines = cfg.progress is not False and self.main  # lines of what is done
        self.method = get_method(cfg.method)
        # allocator, channels-last; bf16 autocast only on request (the reference was fp32)
        self.settings = runtime.configure(self.device, autocast=cfg.autocast)
        self.use_autocast = self.settings.autocast
        self.result: dict[str, Any] = self.folder.result()

    # -- bookkeeping ---------------------------------------------------------------------
    def save_result(self) -> None:
        self.folder.write_result(self.result)

    def load_model(self, stage: str = "pretrained", n: int | None = None):
        """A checkpoint of the run folder, on this run's device and layout, and its extras."""
        model, extra = self.folder.load_model(stage, n)
        return runtime.prepare_model(model, self.settings), extra

    def _log_history(self, prefix: str, history: list[dict[str, float]]) -> None:
        for rec in history:
            for key, value in rec.items():
                if key != "epoch":
                    self.log_fn(f"{prefix}.{key}", value, rec["epoch"])
        self.board.flush()  # each epoch on disk: a killed run keeps its curves

    def _eval_options(self, batch_size: int) -> dict[str, Any]:
        return dict(
            batch_size=batch_size,
            device=self.device,
            use_autocast=self.use_autocast,
            progress=self.progress,
        )

    # -- data ----------------------------------------------------------------------------
    def load_data(self) -> tuple[VideoData, VideoData]:
        """(pretraining data, classification data)."""
        return load_data(self.cfg, self.progress)

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
            extra={"dataset": c.dataset, "classify_dataset": c.classify_dataset},
        )

    # -- pretraining ---------------------------------------------------------------------
    def pretrain(self, pre: VideoData, cls: VideoData, model_cfg: ModelConfig) -> VideoModel:
        """Pretrain (or, for methods without pretraining, just initialise) and save the model.

        Then the reconstruction losses on the training and test videos (and, when the
        classification data is another dataset, on its videos: NEC Animal's on COIL-100) and
        the pictures; methods without pretraining report those of their random decoder.
        """
        if self.folder.has() and self.result.get("pretrain") is not None:
            log.info("pretraining already done: loading %s", self.folder.checkpoint())
            return self.load_model()[0]
        torch.manual_seed(stream_seed(self.cfg.seed, Stream.INIT))
        model = runtime.prepare_model(build_model(model_cfg), self.settings)
        summary: dict[str, Any] = {"pretrained": self.method.pretrained}
        if self.method.pretrained:
            history = self._train_pretraining(model, pre)
            summary.update(epochs=len(history), history=[r["loss"] for r in history])
        if model.decoder is not None:
            summary.update(self._reconstruction_losses(model, pre, cls, summary.get("epochs", 0)))
            self.save_pictures(model, pre)
            self.board.pictures(summary.get("epochs", 0))
        self.folder.save_model(model, extra=zca_to_extra(pre.zca))
        self.result["pretrain"] = summary
        self.save_result()
        self.folder.clear_pretrain_state()
        return model

    def _train_pretraining(self, model: VideoModel, pre: VideoData) -> list[dict[str, float]]:
        """The pretraining stage, continued from the folder's saved state if there is one."""
        stage = stages.pretraining(self.cfg, model)
        return fit(
            model,
            stage,
            pre.train,
            device=self.device,
            use_autocast=self.use_autocast,
            generator=stages.shuffling(self.cfg),
            progress=self.cfg.progress,
            on_epoch=lambda e, r: self._log_history("pretrain", [r]),
            resume=self.folder.read_pretrain_state(stage.params),
            save_state=self.folder.save_pretrain_state,
        )

    def _reconstruction_losses(
        self, model: VideoModel, pre: VideoData, cls: VideoData, step: int
    ) -> dict[str, float]:
        """`<part>_loss` on the training and test videos (and the classification videos of
        a transfer run), each ranked within its own batches."""
        started = time.perf_counter()
        parts = [("train", pre.train), ("test", pre.test)]
        if cls is not pre and cls.split != "none":
            parts.append((cls.name, cls.train))  # NEC Animal: COIL-100's videos
        losses = {}
        for name, videos in parts:
            options = self._eval_options(self.cfg.batch_size)
            loss = evaluate(model, videos, pretrain_loss, desc=f"{name} loss", **options)["loss"]
            losses[f"{name}_loss"] = loss
            self.log_fn(f"pretrain.{name}_loss", loss, step)
        self.log_fn("pretrain.evaluate_seconds", time.perf_counter() - started, step)
        if self.lines:
            said = ", ".join(f"{name} {losses[f'{name}_loss']:.4g}" for name, _ in parts)
            tqdm.write(f"reconstruction loss: {said}")
        return losses

    def save_pictures(self, model: VideoModel, pre: VideoData) -> None:
        """A few training and test videos beside their reconstructions, and the decoder's
        filters (rank 0 only)."""
        from . import plots

        k = self.cfg.pictures
        if k <= 0 or not self.main:
            return
        samples = [
            ("train", pre.train.subset(np.arange(min(k, len(pre.train))))),
            ("test", pre.test.subset(np.arange(min(k, len(pre.test))))),
        ]
        model.eval()
        outputs = []
        for _, sample in samples:
            x = torch.from_numpy(sample.videos).to(self.device)
            mask = None if sample.mask is None else torch.from_numpy(sample.mask).to(self.device)
            with torch.no_grad():  # rank 0 alone: lifetime sparsity over these videos
                outputs.append(model.reconstruct(x, mask)[0].float().cpu().numpy())
        masks = [_real(sample) for _, sample in samples]
        plots.save_reconstructions(
            np.concatenate([sample.videos for _, sample in samples]),
            np.concatenate(outputs),
            self.folder / RECONSTRUCTIONS,
            shift=1 if self.method.target == "next" else 0,
            mask=None if all(s.mask is None for _, s in samples) else np.concatenate(masks),
            labels=[name for name, sample in samples for _ in range(len(sample))],
        )
        plots.save_filters(
            model.decoder.weight.detach().float().cpu().numpy(),
            self.folder / FILTERS,
            groups=self.cfg.groups if self.method.sparsity == "group" else 1,
        )

    # -- classification ------------------------------------------------------------------
    def classify(self, cls: VideoData, n: int, previous: int | None = None) -> dict[str, Any]:
        """Stacked then end-to-end classification with `n` labels; returns both triples.

        previous: the label budget done just before. When the head carries over
        (`carry_head`, the reference on Rotated MNIST and Scanned CIFAR-10), the head and
        both classifier optimizers continue from its end-to-end stage; otherwise (or for the
        first budget) the head is the pretrained checkpoint's and the optimizers are fresh.
        """
        train, val, test = cls.labeled_split(n, stages.labeled_split_rng(self.cfg, n))
        model, _ = self.load_model()
        carried: dict[str, Any] = {}
        if self.cfg.carry_head and previous is not None:
            before, extra = self.load_model("finetune", previous)
            model.head.load_state_dict(before.head.state_dict())
            carried = extra.get("optimizers") or {}
        loss, plain = stages.classifier_losses(self.cfg, train.labels, cls.num_classes)
        out: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "n_test": len(test)}
        states: dict[str, Any] = {}
        for name in stages.CLASSIFIER_STAGES:
            stage = stages.classifier(self.cfg, model, name, loss, plain)
            optimizer = stage.make_optimizer()
            if name in carried:
                optimizer.load_state_dict(carried[name])
            history = self._train_classifier(model, stage, optimizer, n, train, val)
            states[name] = optimizer.state_dict()
            out[name] = {"epochs": len(history)}
            out[name].update(self._test(model, plain, n, name, len(history), train, val, test))
            extra = {"n": n, "stage": name}
            if name == "finetune":
                extra["optimizers"] = states
            self.folder.save_model(model, name, n, extra)
        return out

    def _train_classifier(
        self,
        model: VideoModel,
        stage: Stage,
        optimizer: torch.optim.Optimizer,
        n: int,
        train: Videos,
        val: Videos,
    ) -> list[dict[str, float]]:
        """One classifier stage of budget `n`; the stacked one on cached features if they fit."""
        label = _label(n, stage.name)
        stages.seed_dropout(self.cfg, n, stage.name)
        kw = dict(
            device=self.device,
            use_autocast=self.use_autocast,
            generator=stages.shuffling(self.cfg, n, stage.name),
            eval_batch_size=self.cfg.eval_batch_size,
            progress=self.cfg.progress,
            optimizer=optimizer,
            desc=label,
            on_epoch=lambda e, r: self._log_history(f"n{n}.{stage.name}", [r]),
        )
        if stage.name != "stacked" or not self.can_cache_features(train, val, model):
            return fit(model, stage, train, val, **kw)
        started = time.perf_counter()
        features = [
            encode_features(
                model,
                s,
                self.cfg.eval_batch_size,
                self.device,
                self.use_autocast,
                self.progress,
                f"{label}: {part} features",
            )
            for part, s in (("train", train), ("validation", val))
        ]
        self.log_fn(f"n{n}.{stage.name}.features_seconds", time.perf_counter() - started, 0)
        return fit(FeatureHead(model), stage, *features, **kw)

    def _test(
        self, model: VideoModel, loss: ClassificationLoss, n: int, name: str, epochs: int, *sets
    ) -> dict[str, dict[str, float]]:
        """Loss and accuracy on the labeled train, validation and test sets (`sets`)."""
        started, label = time.perf_counter(), _label(n, name)
        out = {}
        for split, videos in zip(("train", "val", "test"), sets, strict=True):
            out[split] = evaluate(
                model,
                videos,
                loss,
                accuracy=True,
                desc=f"{label}: {split} set",
                **self._eval_options(self.cfg.eval_batch_size),
            )
            for key, value in out[split].items():
                self.log_fn(f"n{n}.{name}.{split}_{key}", value, epochs)
        self.log_fn(f"n{n}.{name}.evaluate_seconds", time.perf_counter() - started, epochs)
        if self.lines:
            accuracy = 100 * out["test"]["accuracy"]
            tqdm.write(f"{label}: test accuracy {accuracy:.1f}% after {epochs} epochs")
        return out

    # -- probes ----------------------------------------------------------------------------
    def probe(self, cls: VideoData, n: int) -> dict[str, Any]:
        """A linear and a k-NN probe (`gksparse.evaluation.vectors`) of the frozen
        pretrained encoder's vectors of budget `n`'s labeled split, encoded once;
        `{"linear": ..., "knn": ...}`.

        Draws from no stream of the other stages: torch's random state is left as it was.
        """
        started = time.perf_counter()
        splits = cls.labeled_split(n, stages.labeled_split_rng(self.cfg, n))
        with vectors.same_rng(self.device):  # building the model draws initial weights
            model, _ = self.load_model()
            batch, progress = self.cfg.eval_batch_size, self.progress
            encoded = vectors.encode_splits(
                model, splits, n, batch, self.device, self.use_autocast, progress
            )
            self.log_fn(f"n{n}.probe.features_seconds", time.perf_counter() - started, 0)
            out = vectors.probe_budget(
                encoded,
                splits,
                n=n,
                num_classes=cls.num_classes,
                seed=self.cfg.seed,
                log_fn=self.log_fn,
                device=self.device,
            )
        self.log_fn(f"n{n}.probe.seconds", time.perf_counter() - started, 0)
        if self.lines:
            for line in vectors.probe_lines(out, n):
                tqdm.write(line)
        return out

    def can_cache_features(self, train: Videos, val: Videos, model: VideoModel) -> bool:
        """Whether the stacked stage may train the head on features computed once."""
        return fits_in_cache(model, train, val, self.cfg.feature_cache_gb)

    # -- the whole protocol --------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Pretrain, then stacked + end-to-end for every label budget; returns the result
        (and writes it, with the settings, into the event files' hparams)."""
        try:
            self._run()
            self.board.hparams(self.cfg.to_dict(), self.result)
            return self.result
        finally:
            self.board.close()

    def _run(self) -> None:
        """The stages of `run`, each writing into `self.result`."""
        pre, cls = self.load_data()
        self.check_budgets(cls)
        self.pretrain(pre, cls, self.model_config(pre, cls))
        if cls.split == "none" and self.cfg.num_labeled:
            log.warning("%s has no labels: pretraining only", cls.name)
            return
        previous = None
        for n in self.cfg.num_labeled:
            budget = self.result["budgets"].get(str(n))
            if budget is not None:
                log.info("label budget %d already done", n)
            else:
                self.result["budgets"][str(n)] = budget = self.classify(cls, n, previous)
                self.save_result()
            if self.cfg.probe and "probe" not in budget:  # also for budgets done before
                budget["probe"] = self.probe(cls, n)
                self.save_result()
            self.board.flush()
            previous = n

    def check_budgets(self, cls: VideoData) -> None:
        """Refuse label budgets that the labeled split cannot serve, before any training
        (the known datasets are checked with the config; a folder of videos only here)."""
        if cls.split == "none":
            return
        for n in self.cfg.num_labeled:
            try:
                check_budget(cls.split, n, len(cls.train), cls.num_classes, cls.name)
            except ValueError as e:
                raise ConfigError(f"num_labeled={self.cfg.num_labeled!r}: {e}") from None


def load_data(cfg: ProtocolConfig, progress: bool = False) -> tuple[VideoData, VideoData]:
    """(pretraining data, classification data) of a run, as the protocol loads them."""
    kw = dict(
        data_dir=cfg.data_dir,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        seed=cfg.seed,
        zca_epsilon=cfg.zca_epsilon,
        progress=progress,
        zca=cfg.zca,
    )
    with distributed.main_first():  # rank 0 fills the data cache, the others read it
        pre = datasets.load(cfg.dataset, **kw, **cfg.data_options)
        same = cfg.classify_dataset == cfg.dataset
        return pre, pre if same else datasets.load(cfg.classify_dataset, **kw)


def _label(n: int, name: str) -> str:
    """How the progress lines name a classifier stage: 'n=300 stacked', 'n=300 end-to-end'."""
    return f"n={n} {STAGE_LABELS[name]}"


def _real(v: Videos) -> np.ndarray:
    """`v`'s frame mask, all True where it has none."""
    return np.ones(v.videos.shape[:2], bool) if v.mask is None else v.mask


def run_protocol(
    cfg: ProtocolConfig, run_dir: str | os.PathLike, log_fn: LogFn | None = None
) -> dict[str, Any]:
    """Run (or resume) the protocol of `cfg` in `run_dir`; returns the result dict."""
    return Protocol(cfg, run_dir, log_fn).run()
