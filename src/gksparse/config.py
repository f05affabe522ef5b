"""One run's settings (`ProtocolConfig`), checked whole before any work, and which finished
work each setting decided (what may still change when a run is resumed).

Every key is checked for type and range when a `ProtocolConfig` is made, so a bad value is
one sentence naming the key, the value and what is allowed (a `ConfigError`), before any
data is read or any folder made. The experiment scripts check the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .data import mnistrotated
from .data.splits import check_budget
from .models import METHODS, get_method

DATASETS = ("mnistrotated", "cifar10scanned", "coil100", "necanimal", "videos")
# The labeled split of each dataset that has one: (kind, training videos, classes).
LABELED = {
    "mnistrotated": ("random", mnistrotated.NUM_TRAIN, mnistrotated.NUM_CLASSES),
    "cifar10scanned": ("random", 50000, 10),
    "coil100": ("frames", 100, 100),
}
# The reference rebuilt the classifier per label budget only for these (METHOD.md 5.2).
FRESH_HEAD_DATASETS = ("coil100", "necanimal", "videos")
CLASS_WEIGHTS = ("none", "balanced")
ADAMS = ("keras", "torch")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and what is allowed."""


@dataclass
class ProtocolConfig:
    """One run: one dataset x one method x one seed (METHOD.md sections 4-6).

    The defaults are the reference's training rules (METHOD.md 5.1, 5.2); each rule has a key
    that switches it: `clipnorm` (None: the method's), `adam` ('keras' or 'torch'),
    `class_weight` ('none' or 'balanced'), `carry_head` (None: the dataset's), `zca` (None:
    the dataset's, never for vgg19), `autocast` (bf16; off: float32).
    """

    dataset: str
    method: str
    seed: int = 0
    num_labeled: list[int] = field(default_factory=lambda: [300])
    classify_dataset: str | None = None  # None: the dataset itself (necanimal: coil100)
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    zca: bool | None = None  # None: as the reference (the dataset's choice; never for vgg19)
    zca_epsilon: float | None = 1e-3
    batch_size: int = 30
    filters: int = 64
    enc_kernel: int = 3
    dec_kernel: int = 11
    groups: int = 16
    spatial: bool = True  # False: the 'nospatial' ablation (k_spatial = H*W)
    lifetime: bool = True  # False: the 'nolifetime' ablation (k_lifetime = batch*T)
    epochs: int = 50
    classifier_epochs: int | None = None  # most epochs of each classifier stage; None: epochs
    patience: int | None = 5
    lr: float = 1e-4
    finetune_lr: float = 1e-5
    momentum: float = 0.9
    clipnorm: float | None = None  # Keras' global clipnorm; None: the method's; 0: off
    adam: str = "keras"  # 'keras': Keras 2.2.4's Adam (the reference); 'torch': torch's
    class_weight: str = "none"  # 'none': as the reference trained; 'balanced': its intent
    carry_head: bool | None = None  # head + optimizers carried between budgets; None: dataset's
    device: str | None = None  # None: CUDA when available
    autocast: bool = False  # bf16 autocast: faster, but not the reference's float32
    eval_batch_size: int = 100
    pictures: int = 4
    feature_cache_gb: float = 2.0  # stacked stage: cache encoder features up to this size
    vgg_weights: str | None = "IMAGENET1K_V1"
    progress: bool = True
    data_options: dict[str, Any] = field(default_factory=dict)  # more options of the loader
    # Under torchrun: lifetime sparsity over the whole global batch (True), or over each
    # process's shard (False: the per-process behaviour of the original code).
    global_lifetime: bool = True

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtocolConfig:
        """Build from a larger dict (e.g. sacred's config), ignoring keys it does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    # -- the reference's rules, resolved ---------------------------------------------------
    @property
    def clip(self) -> float:
        """The clipnorm of all three stages: the key's, else the method's; 0 is off."""
        return float(get_method(self.method).clipnorm if self.clipnorm is None else self.clipnorm)

    @property
    def adam_optimizer(self) -> str:
        """The `train.Stage` optimizer of pretraining and the stacked stage."""
        return "adam" if self.adam == "keras" else "torch_adam"

    @property
    def carries_head(self) -> bool:
        """Whether the head and classifier optimizers carry over between label budgets."""
        if self.carry_head is not None:
            return self.carry_head
        return (self.classify_dataset or self.dataset) not in FRESH_HEAD_DATASETS

    @property
    def whiten(self) -> bool | None:
        """`zca` for the data loaders: False for vgg19 unless asked; None: the dataset's."""
        if self.zca is None and not get_method(self.method).whiten:
            return False
        return self.zca


# -- checks ----------------------------------------------------------------------------------
def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not a valid setting: {allowed}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(
        value
    )


def _int(cfg: ProtocolConfig, key: str, low: int, optional: bool = False) -> None:
    value = getattr(cfg, key)
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        extra = " (or None)" if optional else ""
        _fail(key, value, f"use a whole number >= {low}{extra}")


def _number(cfg: ProtocolConfig, key: str, low: float, strict: bool, optional: bool = False):
    value = getattr(cfg, key)
    if optional and value is None:
        return
    if not _is_number(value) or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        _fail(key, value, f"use a number {bound}" + (" (or None)" if optional else ""))


def _flag(cfg: ProtocolConfig, key: str, optional: bool = False) -> None:
    value = getattr(cfg, key)
    if not (isinstance(value, bool) or (optional and value is None)):
        _fail(key, value, "use True or False" + (" (or None)" if optional else ""))


def _choice(cfg: ProtocolConfig, key: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, key) not in choices:
        _fail(key, getattr(cfg, key), f"use one of {', '.join(choices)}")


def check(cfg: ProtocolConfig) -> None:
    """Raise a `ConfigError` for the first key of `cfg` whose value cannot work."""
    _choice(cfg, "dataset", DATASETS)
    if cfg.method not in METHODS:
        _fail("method", cfg.method, f"use one of {', '.join(METHODS)}")
    if cfg.classify_dataset is not None:
        _choice(cfg, "classify_dataset", tuple(LABELED))
    if not _is_int(cfg.seed):
        _fail("seed", cfg.seed, "use a whole number")
    for key in ("batch_size", "filters", "groups", "epochs", "eval_batch_size"):
        _int(cfg, key, 1)
    for key in ("train_size", "test_size", "classifier_epochs", "patience"):
        _int(cfg, key, 1, optional=True)
    _int(cfg, "pictures", 0)
    for key in ("enc_kernel", "dec_kernel"):
        _int(cfg, key, 1)
        if getattr(cfg, key) % 2 == 0:
            _fail(key, getattr(cfg, key), "use an odd kernel size ('same' padding)")
    if get_method(cfg.method).sparsity == "group" and cfg.filters % cfg.groups:
        _fail("groups", cfg.groups, f"use a divisor of filters={cfg.filters}")
    for key in ("lr", "finetune_lr"):
        _number(cfg, key, 0, strict=True)
    _number(cfg, "momentum", 0, strict=False)
    if cfg.momentum >= 1:
        _fail("momentum", cfg.momentum, "use a number from 0 to below 1")
    _number(cfg, "clipnorm", 0, strict=False, optional=True)
    _number(cfg, "zca_epsilon", 0, strict=False, optional=True)
    _number(cfg, "feature_cache_gb", 0, strict=False)
    for key in ("spatial", "lifetime", "autocast", "progress", "global_lifetime"):
        _flag(cfg, key)
    for key in ("zca", "carry_head"):
        _flag(cfg, key, optional=True)
    if cfg.zca and cfg.zca_epsilon is None:
        _fail("zca_epsilon", None, "zca=True needs a number >= 0 (the reference's is 1e-3)")
    _choice(cfg, "class_weight", CLASS_WEIGHTS)
    _choice(cfg, "adam", ADAMS)
    if not isinstance(cfg.data_options, dict):
        _fail("data_options", cfg.data_options, "use a dict of the folder loader's options")
    if cfg.vgg_weights is not None and not isinstance(cfg.vgg_weights, str):
        _fail("vgg_weights", cfg.vgg_weights, "use a torchvision weights name or None")
    _check_budgets(cfg)
    check_device(cfg.device)


def _check_budgets(cfg: ProtocolConfig) -> None:
    """`num_labeled`: a list of distinct budgets that the labeled split can serve."""
    budgets = cfg.num_labeled
    if not isinstance(budgets, (list, tuple)) or not all(_is_int(n) for n in budgets):
        _fail("num_labeled", budgets, "use a list of label budgets, e.g. [300, 600]")
    if len(set(budgets)) != len(budgets):
        _fail("num_labeled", budgets, "use each budget once")
    name = cfg.classify_dataset or ("coil100" if cfg.dataset == "necanimal" else cfg.dataset)
    if name not in LABELED:  # your own videos: checked once the folder is read
        return
    split, videos, classes = LABELED[name]
    if split == "random" and cfg.train_size is not None:
        videos = min(videos, cfg.train_size)
    for n in budgets:
        try:
            check_budget(split, n, videos, classes, name)
        except ValueError as e:
            raise ConfigError(
                f"num_labeled={list(budgets)!r} is not a valid setting: {e}"
            ) from None


def check_device(device: str | None) -> None:
    """Raise a `ConfigError` unless `device` (None, 'cpu', 'cuda', 'cuda:N') exists here."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        _fail("device", device, "use cpu, cuda or cuda:<index> (or leave it unset)")
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        _fail("device", device, "use cpu or cuda (this project runs on CPUs and NVIDIA GPUs)")
    if torch.version.cuda is None:
        _fail(
            "device",
            device,
            f"this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA build "
            "(e.g. pip install torch --index-url https://download.pytorch.org/whl/cu126) or "
            "use device=cpu",
        )
    count = torch.cuda.device_count()
    if count == 0:
        _fail("device", device, "no CUDA GPU is visible on this machine; use device=cpu")
    if dev.index is not None and dev.index >= count:
        _fail(
            "device",
            device,
            f"this machine has {count} CUDA GPU(s): use cuda:0 to cuda:{count - 1}",
        )


# -- resume: which finished work each key decided ----------------------------------------------
PRETRAINING, CLASSIFIERS = "pretraining", "classifiers"
# Keys that change nothing already computed (they are read again on every resume).
FREE_KEYS = (
    "resume",
    "data_dir",
    "results_dir",
    "device",
    "autocast",
    "progress",
    "pictures",
    "eval_batch_size",
    "feature_cache_gb",
    "num_labeled",  # checked on its own: finished budgets must stay
)
# Keys that only the classifier stages of the label budgets read.
CLASSIFIER_KEYS = (
    "classifier_epochs",
    "patience",
    "finetune_lr",
    "momentum",
    "class_weight",
    "carry_head",
)


def stage_of(key: str) -> str | None:
    """The work `key` decides: PRETRAINING (the data, the model, pretraining; also every key
    a dataset script adds, such as a video folder's options), CLASSIFIERS, or None."""
    if key in FREE_KEYS:
        return None
    return CLASSIFIERS if key in CLASSIFIER_KEYS else PRETRAINING


def resume_conflicts(
    saved: dict[str, Any],
    new: dict[str, Any],
    *,
    pretraining_started: bool,
    finished_budgets: list[int],
) -> list[str]:
    """Why `new` cannot continue a run made with `saved`: one sentence per conflict.

    A key may change while no work it decided is done: pretraining keys until pretraining
    has started (a saved epoch or its end), classifier keys until a label budget finished;
    the finished budgets must stay in `num_labeled`, in their order and first when the head
    carries over between budgets (each budget then starts from the one before).
    """
    out = []
    for key in sorted(set(saved) | set(new)):
        if saved.get(key) == new.get(key):
            continue
        stage = stage_of(key)
        if stage == PRETRAINING and pretraining_started:
            out.append(f"{key} (the pretraining already ran with {key}={saved.get(key)!r})")
        elif stage == CLASSIFIERS and finished_budgets:
            done = ", ".join(map(str, finished_budgets))
            out.append(f"{key} (label budget(s) {done} already finished with {saved.get(key)!r})")
    budgets = list(new.get("num_labeled") or [])
    missing = [n for n in finished_budgets if n not in budgets]
    if missing:
        out.append(f"num_labeled (it drops the finished budget(s) {', '.join(map(str, missing))})")
    elif finished_budgets and new.get("carry_head") is not False and _carries(new):
        if budgets[: len(finished_budgets)] != list(finished_budgets):
            out.append(
                f"num_labeled (the head carries over between budgets, so the finished "
                f"{list(finished_budgets)} must come first, in that order)"
            )
    return out


def _carries(cfg: dict[str, Any]) -> bool:
    if cfg.get("carry_head") is not None:
        return bool(cfg["carry_head"])
    return (cfg.get("classify_dataset") or cfg.get("dataset")) not in FRESH_HEAD_DATASETS
