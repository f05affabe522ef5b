"""The cells of a sweep: datasets x methods x ablations x seeds, and the words each cell
gives its experiment script (`python -m gksparse.run <dataset> with <words>`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from ..model.methods import METHODS
from ..protocol.config import DATASETS

ABLATIONS = ("none", "nospatial", "nolifetime")
NEEDS_EXTRA = {"vgg19": ("torchvision", "the 'vgg' extra: pip install -e '.[vgg]'")}


class GridError(ValueError):
    """Bad sweep input; the message is one sentence."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid: `gksparse.run <dataset> with <method> [<ablation>] seed=<seed>`
    followed by the words given after `with` on the sweep's command line."""

    dataset: str
    method: str
    ablation: str  # 'none' or a named config of the experiment scripts
    seed: int
    words: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """A file name for the cell: 'mnistrotated-groupwtacnn-nospatial-seed1'."""
        return f"{self.dataset}-{self.method}-{self.ablation}-seed{self.seed}"

    @property
    def label(self) -> str:
        """How output lines name it: 'mnistrotated groupwtacnn nospatial seed=1'."""
        ablation = "" if self.ablation == "none" else f" {self.ablation}"
        return f"{self.dataset} {self.method}{ablation} seed={self.seed}"

    def experiment_words(self) -> list[str]:
        """The words after `with` of the cell's own run."""
        ablation = [] if self.ablation == "none" else [self.ablation]
        return [self.method, *ablation, f"seed={self.seed}", *self.words]


def has_ablations(method: str) -> bool:
    """Whether `nospatial` and `nolifetime` change `method` (it pretrains with sparsity)."""
    return METHODS[method].sparsity != "none"


def parse_names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise GridError(f"--{what} is empty; give a comma-separated list, e.g. {known[0]}.")
    for n in names:
        if n not in known:
            raise GridError(f"unknown {what[:-1]} {n!r}; use one of {', '.join(known)}.")
    return list(dict.fromkeys(names))


def parse_methods(text: str, say=print) -> list[str]:
    """`--methods`: names, or 'all' (every method whose extra is installed; `say` tells
    which were left out)."""
    if text.strip() != "all":
        return parse_names(text, list(METHODS), "methods")
    methods = []
    for name in METHODS:
        module, extra = NEEDS_EXTRA.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            say(f"left out {name}: it needs {module}, {extra}")
        else:
            methods.append(name)
    return methods


def parse_seeds(text: str) -> list[int]:
    """`--seeds 1,2,3`: whole numbers."""
    seeds = []
    for s in (s.strip() for s in text.split(",")):
        try:
            seeds.append(int(s))
        except ValueError:
            raise GridError(f"seed {s!r} is not a whole number; use e.g. --seeds 1,2,3.") from None
    return list(dict.fromkeys(seeds))


def check_words(words: Sequence[str]) -> None:
    """The words after `with` go to every cell; the grid's own axes are not among them."""
    for w in words:
        key = w.split("=", 1)[0]
        if "=" in w and key in ("seed", "method", "resume", "results_dir", "dataset"):
            flag = {"results_dir": "--results", "method": "--methods"}.get(key, f"--{key}s")
            raise GridError(f"{w!r} is set by the sweep; give it as {flag} instead.")
        if w in METHODS or w in ABLATIONS:
            raise GridError(f"{w!r} after 'with' is set by the sweep; use --methods/--ablations.")


def cells(
    datasets: Sequence[str],
    methods: Sequence[str],
    ablations: Sequence[str],
    seeds: Sequence[int],
    words: Sequence[str] = (),
) -> list[Cell]:
    """Every cell, dataset by dataset; the ablations only for methods that have them."""
    for d in datasets:
        if d not in DATASETS:
            raise GridError(f"unknown dataset {d!r}; use one of {', '.join(DATASETS)}.")
    check_words(words)
    out = []
    for d in dict.fromkeys(datasets):
        for m in methods:
            for a in ablations:
                if a != "none" and not has_ablations(m):
                    continue
                out += [Cell(d, m, a, s, tuple(words)) for s in seeds]
    if not out:
        raise GridError("the grid has no cells: the ablations given apply to none of the methods.")
    return out
