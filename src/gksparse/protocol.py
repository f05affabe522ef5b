"""The paper's protocol (METHOD.md section 5): pretrain, then per label budget stacked and
end-to-end classification. Knows nothing of sacred: it reads a `ProtocolConfig`, writes
into a run folder and reports metrics through a callback.

Run folder layout (all files written atomically; a killed run resumes from it):
    result.json             the result so far, rewritten as each stage finishes
    pretrained.pt           encoder + decoder + head after pretraining (or the random init)
    pretrain_state.pt       the pretraining stage's state after its last finished epoch
    stacked_n{n}.pt         the classifier after the stacked stage of budget n
    finetune_n{n}.pt        the classifier after end-to-end fine-tuning of budget n, with
                            both classifier optimizers' states (the next budget may carry
                            them over, METHOD.md 5.2)
    reconstructions.png     a few training and test videos beside their reconstructions
    decoder_filters.png     the decoder's filters, one row per group for group methods
    .lock                   held by the process writing the folder (one writer at a time)

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as datasets
from . import distributed, files, runtime
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ConfigError, ProtocolConfig
from .data.splits import check_budget
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

__all__ = ["ConfigError", "Protocol", "ProtocolConfig", "run_protocol"]

log = logging.getLogger(__name__)
LogFn = Callable[[str, float, int], None]


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
    model: VideoModel,
    data: Videos,
    batch_size: int,
    device: torch.device,
    use_autocast: bool,
    progress: bool = False,
    desc: str = "features",
) -> Videos:
    """The head's inputs for every video: `Videos` of `(N, T, D, 1, 1)` float32 features."""
    model.eval()
    out = []
    steps = -(-len(data) // batch_size)
    bar = tqdm(
        batches(data, batch_size, device),
        total=steps,
        desc=desc,
        leave=False,
        disable=not progress,
    )
    for batch in bar:
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
            files.hold_folder(self.run_dir)  # one writer per run folder
        self.log_fn = (log_fn if self.main else None) or (lambda name, value, step: None)
        self.progress = cfg.progress and self.main
        self.method = get_method(cfg.method)
        # allocator, channels-last; bf16 autocast only on request (the reference was fp32)
        self.settings = runtime.configure(self.device, autocast=cfg.autocast)
        self.use_autocast = self.settings.autocast
        self.result: dict[str, Any] = distributed.run_on_main(self._read_result)

    # -- bookkeeping ---------------------------------------------------------------------
    def _read_result(self) -> dict[str, Any]:
        return read_result(self.run_dir)

    def save_result(self) -> None:
        if self.main:
            files.write_json(self.result, self.run_dir / "result.json")

    def load_model(self, path: Path) -> tuple[VideoModel, dict[str, Any]]:
        """The checkpoint at `path` and its extras (read by rank 0, sent to the other ranks)."""
        if distributed.is_distributed():
            data = distributed.run_on_main(path.read_bytes)
            if not self.main:
                with tempfile.TemporaryDirectory() as tmp:
                    copy = Path(tmp) / path.name
                    copy.write_bytes(data)
                    model, extra = load_checkpoint(copy)
                    return runtime.prepare_model(model, self.settings), extra
        model, extra = load_checkpoint(path)
        return runtime.prepare_model(model, self.settings), extra

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
            zca=c.whiten,
        )
        with distributed.main_first():  # rank 0 fills the data cache, the others read it
            if c.dataset == "videos":  # your own folder (experiments/videos.py)
                from .data.videofolder import load_folder

                kw["zca"] = True if c.whiten is None else c.whiten  # whitened, as COIL-100
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
    def pretrain(self, pre: VideoData, cls: VideoData, model_cfg: ModelConfig) -> VideoModel:
        """Pretrain (or, for methods without pretraining, just initialise) and save the model.

        Then the reconstruction losses on the training and test videos (and, when the
        classification data is another dataset, on its videos: NEC Animal's on COIL-100) and
        the pictures; methods without pretraining report those of their random decoder.
        """
        c, path = self.cfg, self.run_dir / "pretrained.pt"
        if distributed.run_on_main(path.is_file) and self.result.get("pretrain") is not None:
            log.info("pretraining already done: loading %s", path)
            return self.load_model(path)[0]
        torch.manual_seed(_seed(c.seed, 0))
        model = runtime.prepare_model(build_model(model_cfg), self.settings)
        summary: dict[str, Any] = {"pretrained": self.method.pretrained}
        ev = dict(
            batch_size=c.batch_size,
            device=self.device,
            use_autocast=self.use_autocast,
            progress=self.progress,
        )
        if self.method.pretrained:
            state_path = self.run_dir / "pretrain_state.pt"
            stage = Stage(
                "pretrain",
                model.trainable("pretrain"),
                pretrain_loss,
                epochs=c.epochs,
                batch_size=c.batch_size,
                optimizer=c.adam_optimizer,
                lr=c.lr,
                clipnorm=c.clip,
            )
            resume = distributed.run_on_main(lambda: read_pretrain_state(state_path, stage))
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
                save_state=lambda s: files.atomic_save(s, state_path),
            )
            summary.update(epochs=len(history), history=[r["loss"] for r in history])
        step = summary.get("epochs", 0)
        if model.decoder is not None:
            started = time.perf_counter()
            parts = [("train", pre.train), ("test", pre.test)]
            if cls is not pre and cls.split != "none":
                parts.append((cls.name, cls.train))  # NEC Animal: COIL-100's videos
            for name, videos in parts:
                loss = evaluate(model, videos, pretrain_loss, desc=f"{name} loss", **ev)["loss"]
                summary[f"{name}_loss"] = loss
                self.log_fn(f"pretrain.{name}_loss", loss, step)
            self.log_fn("pretrain.evaluate_seconds", time.perf_counter() - started, step)
            if self.progress:
                losses = ", ".join(f"{name} {summary[f'{name}_loss']:.4g}" for name, _ in parts)
                tqdm.write(f"reconstruction loss: {losses}")
            self.save_pictures(model, pre)
        if self.main:
            save_checkpoint(path, model, **zca_to_extra(pre.zca))
        self.result["pretrain"] = summary
        self.save_result()
        if self.main:
            (self.run_dir / "pretrain_state.pt").unlink(missing_ok=True)
        return model

    def save_pictures(self, model: VideoModel, pre: VideoData) -> None:
        """A few training and test videos beside their reconstructions, and the decoder's
        filters (rank 0 only)."""
        from . import plots

        k = self.cfg.pictures
        if k <= 0 or not self.main:
            return
        parts = [("train", pre.train.subset(np.arange(min(k, len(pre.train)))))]
        parts.append(("test", pre.test.subset(np.arange(min(k, len(pre.test))))))
        model.eval()
        rows = []
        for name, sample in parts:
            x = torch.from_numpy(sample.videos).to(self.device)
            mask = None if sample.mask is None else torch.from_numpy(sample.mask).to(self.device)
            with torch.no_grad(), distributed.global_lifetime(False):  # rank 0 alone
                out, _ = model.reconstruct(x, mask)
            rows.append((name, sample, out.float().cpu().numpy()))
        plots.save_reconstructions(
            np.concatenate([sample.videos for _, sample, _ in rows]),
            np.concatenate([out for _, _, out in rows]),
            self.run_dir / "reconstructions.png",
            shift=1 if self.method.target == "next" else 0,
            mask=None
            if all(sample.mask is None for _, sample, _ in rows)
            else np.concatenate([_real(sample) for _, sample, _ in rows]),
            labels=[name for name, sample, _ in rows for _ in range(len(sample))],
        )
        plots.save_filters(
            model.decoder.weight.detach().float().cpu().numpy(),
            self.run_dir / "decoder_filters.png",
            groups=self.cfg.groups if self.method.sparsity == "group" else 1,
        )

    def classify(self, cls: VideoData, n: int, previous: int | None = None) -> dict[str, Any]:
        """Stacked then end-to-end classification with `n` labels; returns both triples.

        previous: the label budget done just before. When the head carries over
        (`carry_head`, the reference on Rotated MNIST and Scanned CIFAR-10), the head and
        both classifier optimizers continue from its end-to-end stage; otherwise (or for the
        first budget) the head is the pretrained checkpoint's and the optimizers are fresh.
        """
        c = self.cfg
        rng = np.random.default_rng(_seed(c.seed, n, 2))
        train, val, test = cls.labeled_split(n, rng)
        model, _ = self.load_model(self.run_dir / "pretrained.pt")
        carried: dict[str, Any] = {}
        if c.carries_head and previous is not None:
            before, extra = self.load_model(self.run_dir / f"finetune_n{previous}.pt")
            model.head.load_state_dict(before.head.state_dict())
            carried = extra.get("optimizers") or {}
        plain = ClassificationLoss()
        weighted = plain
        if c.class_weight == "balanced":
            weighted = ClassificationLoss(balanced_class_weights(train.labels, cls.num_classes))
        out: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "n_test": len(test)}
        ev = dict(
            batch_size=c.eval_batch_size,
            device=self.device,
            use_autocast=self.use_autocast,
            progress=self.progress,
        )
        states: dict[str, Any] = {}
        for name in ("stacked", "finetune"):
            label = f"n={n} {'stacked' if name == 'stacked' else 'end-to-end'}"
            path = self.run_dir / f"{name}_n{n}.pt"
            stage = Stage(
                name,
                model.trainable(name),
                weighted,
                epochs=c.classifier_epochs or c.epochs,
                batch_size=c.batch_size,
                optimizer="sgd" if name == "finetune" else c.adam_optimizer,
                lr=c.lr if name == "stacked" else c.finetune_lr,
                momentum=c.momentum,
                clipnorm=c.clip,
                patience=c.patience,
                val_loss=plain,
            )
            optimizer = stage.make_optimizer()
            if name in carried:
                optimizer.load_state_dict(carried[name])
            torch.manual_seed(_seed(c.seed, n, 3 if name == "stacked" else 4))
            gen = torch.Generator().manual_seed(_seed(c.seed, n, 5 if name == "stacked" else 6))
            kw = dict(
                device=self.device,
                use_autocast=self.use_autocast,
                generator=gen,
                eval_batch_size=c.eval_batch_size,
                progress=self.progress,
                optimizer=optimizer,
                desc=label,
            )
            if name == "stacked" and self.can_cache_features(train, val, model):
                started = time.perf_counter()
                ftrain, fval = (
                    encode_features(
                        model,
                        s,
                        c.eval_batch_size,
                        self.device,
                        self.use_autocast,
                        self.progress,
                        f"{label}: {part} features",
                    )
                    for part, s in (("train", train), ("validation", val))
                )
                self.log_fn(f"n{n}.{name}.features_seconds", time.perf_counter() - started, 0)
                history = fit(FeatureHead(model), stage, ftrain, fval, **kw)
            else:
                history = fit(model, stage, train, val, **kw)
            states[name] = optimizer.state_dict()
            self._log_history(f"n{n}.{name}", history)
            started = time.perf_counter()
            out[name] = {
                "epochs": len(history),
                **{
                    split: evaluate(
                        model, s, plain, accuracy=True, desc=f"{label}: {split} set", **ev
                    )
                    for split, s in (("train", train), ("val", val), ("test", test))
                },
            }
            for split in ("train", "val", "test"):
                for key, value in out[name][split].items():
                    self.log_fn(f"n{n}.{name}.{split}_{key}", value, len(history))
            seconds = time.perf_counter() - started
            self.log_fn(f"n{n}.{name}.evaluate_seconds", seconds, len(history))
            if self.progress:
                test_acc = 100 * out[name]["test"]["accuracy"]
                tqdm.write(f"{label}: test accuracy {test_acc:.1f}% after {len(history)} epochs")
            if self.main:
                extra = {"optimizers": states} if name == "finetune" else {}
                save_checkpoint(path, model, n=n, stage=name, **extra)
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
            self.check_budgets(cls)
            self.pretrain(pre, cls, self.model_config(pre, cls))
            if cls.split == "none" and self.cfg.num_labeled:
                log.warning("%s has no labels: pretraining only", cls.name)
                return self.result
            previous = None
            for n in self.cfg.num_labeled:
                if str(n) in self.result["budgets"]:
                    log.info("label budget %d already done", n)
                else:
                    self.result["budgets"][str(n)] = self.classify(cls, n, previous)
                    self.save_result()
                previous = n
            return self.result

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


def _real(v: Videos) -> np.ndarray:
    """`v`'s frame mask, all True where it has none."""
    return np.ones(v.videos.shape[:2], bool) if v.mask is None else v.mask


def read_result(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The result so far of a run folder (empty when it has none); a damaged `result.json`
    is one sentence naming it."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        return {"pretrain": None, "budgets": {}}
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict) or not isinstance(result.get("budgets"), dict):
            raise ValueError("it is not a result of this protocol")
        return result
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise RuntimeError(
            f"the run record {path} is damaged ({e}); delete it and resume the run: the "
            "stages it recorded are then redone"
        ) from None


STATE_KEYS = ("params", "optimizer", "generator", "rng", "history", "best_loss", "best_epoch")


def read_pretrain_state(path: Path, stage: Stage) -> dict[str, Any] | None:
    """The saved pretraining state for `fit(resume=...)`, None when there is none; a damaged
    or foreign file is one sentence naming it."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
            raise ValueError("it lacks the state of a pretraining stage")
        shapes = [tuple(p.shape) for p in stage.params]
        if [tuple(p.shape) for p in state["params"]] != shapes:
            raise ValueError("its parameters do not fit this run's model")
        return state
    except Exception as e:  # any damage: torch's own errors are of many kinds
        raise RuntimeError(
            f"the pretraining state {path} is damaged ({e}); delete it and resume the run: "
            "pretraining then starts again from its first epoch"
        ) from None


def run_protocol(
    cfg: ProtocolConfig, run_dir: str | os.PathLike, log_fn: LogFn | None = None
) -> dict[str, Any]:
    """Run (or resume) the protocol of `cfg` in `run_dir`; returns the result dict."""
    return Protocol(cfg, run_dir, log_fn).run()
