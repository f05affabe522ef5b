"""One run's settings (`ProtocolConfig`): the single source of the defaults and of the
reference's rules, checked whole before any work.

Every key is checked for type and range when a `ProtocolConfig` is made, so a bad value is
one sentence naming the key, the value and what is allowed (a `ConfigError`), before any
data is read or any folder made; the experiment scripts build one from sacred's config, whose
defaults come from here (`defaults`, `rules`). `RUNTIME_KEYS` and `CLASSIFIER_KEYS` say which
keys change which results: resume (`gksparse.protocol.rundir`) and the report read them from here.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..data.catalog import CATALOG, classified
from ..data.splits import check_budget
from ..model.methods import METHODS, get_method

CLASS_WEIGHTS = ("none", "balanced")
ADAMS = ("keras", "torch")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class ProtocolConfig:
    """One run: one dataset x one method x one seed (METHOD.md sections 4-6).

    The defaults are the reference's training rules (METHOD.md 5.1, 5.2); each rule has a key
    that switches it. `finetune_lr` None is `lr / 10` (the reference's end-to-end rate was
    always its lr / 10). Four keys are resolved once, when the config is made, from the method
    and the dataset (`rules`), and hold the value that runs from then on:
    `clipnorm` (None: the method's; 0: off), `carry_head` (None: the dataset's),
    `zca` (None: the dataset's choice, made by its loader; vgg19: False) and
    `classify_dataset` (None: the dataset itself; necanimal: coil100). `adam` ('keras' or
    'torch') picks the optimizer of pretraining and the stacked stage, `class_weight`
    ('none' or 'balanced') the classifier loss, `autocast` bf16 (off: float32).

    Frozen: `dataclasses.replace` keeps the resolved values; to re-resolve them for another
    method or dataset, build a new config from the settings as given.
    """

    dataset: str
    method: str = "groupwtacrnn"
    seed: int = 0
    num_labeled: list[int] = field(default_factory=lambda: [300])
    classify_dataset: str | None = None  # None: the dataset itself (necanimal: coil100)
    data_dir: str | None = None  # None: $GKSPARSE_DATA, else ~/.cache/gksparse
    train_size: int | None = None  # a deterministic subset of the training videos
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
    finetune_lr: float | None = None  # end-to-end; None: lr / 10, as the reference always had
    momentum: float = 0.9
    clipnorm: float | None = None  # Keras' global clipnorm; None: the method's; 0: off
    adam: str = "keras"  # 'keras': Keras 2.2.4's Adam (the reference); 'torch': torch's
    class_weight: str = "none"  # 'none': as the reference trained; 'balanced': its intent
    carry_head: bool | None = None  # head + optimizers carried between budgets; None: dataset's
    device: str | None = None  # None: CUDA when available (`runtime.default_device`)
    autocast: bool = False  # bf16 autocast: faster, but not the reference's float32
    eval_batch_size: int = 100
    pictures: int = 4
    feature_cache_gb: float = 2.0  # stacked stage: cache encoder features up to this size
    probe: bool = True  # per budget, a linear and a k-NN probe of the frozen features
    vgg_weights: str | None = "IMAGENET1K_V1"
    # True: progress bars always; False: no output of training at all; None: one line per
    # epoch, under bars only on a terminal ($GKSPARSE_PROGRESS=bars|lines decides when set)
    progress: bool | None = None
    tensorboard: bool = True  # TensorBoard event files in the run folder (the extra's package)
    data_options: dict[str, Any] = field(default_factory=dict)  # more options of the loader
    # Under torchrun: lifetime sparsity over the whole global batch (True), or over each
    # process's shard (False: the per-process behaviour of the original code).
    global_lifetime: bool = True

    def __post_init__(self) -> None:
        check(self)
        resolved = rules(self.method, self.dataset, self.classify_dataset)
        for key, value in {**resolved, "finetune_lr": self.lr / 10}.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtocolConfig:
        """Build from a larger dict (e.g. sacred's config), ignoring keys it does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """Every setting, resolved, as plain values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def defaults() -> dict[str, Any]:
    """The default of every setting but `dataset` (what sacred's config starts from)."""
    out = {}
    for f in fields(ProtocolConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def rules(method: str, dataset: str, classify_dataset: str | None = None) -> dict[str, Any]:
    """The reference's choices for a method and dataset (METHOD.md 5.1, 5.2), by key:
    `clipnorm` (the method's Keras clipnorm, 0: off), `carry_head` (whether the head and
    classifier optimizers carry over between label budgets), `zca` (False where the method
    takes no whitening, vgg19; None: the dataset's choice) and `classify_dataset`."""
    m = METHODS.get(method)
    target = classified(dataset, classify_dataset)
    return {
        "clipnorm": float(m.clipnorm) if m else 0.0,
        "carry_head": not CATALOG[target].fresh_head if target in CATALOG else True,
        "zca": None if m is None or m.whiten else False,
        "classify_dataset": target,
    }


# Keys that do not change a run's numbers (where files live, what is printed or drawn, the
# evaluation batch and the feature cache's size): resume may always change them, and the
# report averages runs that differ only in them.
RUNTIME_KEYS = (
    "resume",
    "data_dir",
    "results_dir",
    "device",
    "progress",
    "tensorboard",
    "pictures",
    "eval_batch_size",
    "feature_cache_gb",
)
# Keys that only the classifier stages of the label budgets read.
CLASSIFIER_KEYS = (
    "classifier_epochs",
    "patience",
    "finetune_lr",
    "momentum",
    "class_weight",
    "carry_head",
    "probe",
)


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
    _choice(cfg, "dataset", tuple(CATALOG))
    if cfg.method not in METHODS:
        _fail("method", cfg.method, f"use one of {', '.join(METHODS)}")
    if cfg.classify_dataset not in (None, cfg.dataset):
        _choice(cfg, "classify_dataset", tuple(n for n, f in CATALOG.items() if f.labeled))
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
    _number(cfg, "lr", 0, strict=True)
    _number(cfg, "finetune_lr", 0, strict=True, optional=True)
    _number(cfg, "momentum", 0, strict=False)
    if cfg.momentum >= 1:
        _fail("momentum", cfg.momentum, "use a number from 0 to below 1")
    _number(cfg, "clipnorm", 0, strict=False, optional=True)
    _number(cfg, "zca_epsilon", 0, strict=False, optional=True)
    _number(cfg, "feature_cache_gb", 0, strict=False)
    for key in ("spatial", "lifetime", "autocast", "tensorboard", "global_lifetime", "probe"):
        _flag(cfg, key)
    for key in ("zca", "carry_head", "progress"):
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
    name = classified(cfg.dataset, cfg.classify_dataset)
    f = CATALOG.get(name)
    if f is None or not f.labeled:  # your own videos: checked once the folder is read
        return
    split, videos, classes = f.labeled, f.labeled_pool, f.classes
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
    import torch  # here: reading a config (the report) needs no torch

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
