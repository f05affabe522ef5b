"""The cells of a sweep: datasets x methods x ablations x the values of each `--vary`d key x
seeds, and the words each cell gives its experiment script (`python -m gksparse.run <dataset>
with <words>`)."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.catalog import CATALOG
from ..model.methods import METHODS
from ..protocol.config import RUNTIME_KEYS

ABLATIONS = ("none", "nospatial", "nolifetime")
NEEDS_EXTRA = {"vgg19": ("torchvision", "the 'vgg' extra: pip install -e '.[vgg]'")}
# the keys the sweep sets itself, and what to do instead
SWEEP_KEYS = {
    "seed": "give --seeds instead",
    "method": "give --methods instead",
    "results_dir": "give --results instead",
    "dataset": "give the datasets as the sweep's arguments instead",
    "resume": "rerun the sweep instead, which resumes what did not finish",
}
Vary = tuple[str, tuple[str, ...]]  # a `--vary`d key and its values, as written
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+\-\[\]]")
_CLOSE = {"[": "]", "{": "}", "(": ")"}


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
    varied: tuple[str, ...] = ()  # the cell's `KEY=V` word of each `--vary`d key

    @property
    def name(self) -> str:
        """A file name for the cell: 'mnistrotated-groupwtacnn-nospatial-seed1', then each
        varied word in a file-safe form: '...-seed1-epochs=30'."""
        varied = "".join(f"-{file_safe(w)}" for w in self.varied)
        return f"{self.dataset}-{self.method}-{self.ablation}-seed{self.seed}{varied}"

    @property
    def label(self) -> str:
        """How output lines name it: 'mnistrotated groupwtacnn nospatial seed=1 epochs=30'."""
        ablation = "" if self.ablation == "none" else f" {self.ablation}"
        varied = "".join(f" {w}" for w in self.varied)
        return f"{self.dataset} {self.method}{ablation} seed={self.seed}{varied}"

    def experiment_words(self) -> list[str]:
        """The words after `with` of the cell's own run: those of the sweep's `with`, then
        the varied ones, as if written after them."""
        ablation = [] if self.ablation == "none" else [self.ablation]
        return [self.method, *ablation, f"seed={self.seed}", *self.words, *self.varied]


def file_safe(word: str) -> str:
    """`word` as part of a file name: itself when it is made of letters, digits and
    `_.,=+-[]` (and short), else those kept, the rest `_`, and a hash of the word."""
    safe = _UNSAFE.sub("_", word)
    if safe == word and len(word) <= 60:
        return word
    return f"{safe[:60]}~{hashlib.sha1(word.encode()).hexdigest()[:8]}"


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
        if "=" in w and key in SWEEP_KEYS:
            raise GridError(f"{w!r} is set by the sweep; {SWEEP_KEYS[key]}.")
        if w in METHODS or w in ABLATIONS:
            raise GridError(f"{w!r} after 'with' is set by the sweep; use --methods/--ablations.")


def split_values(text: str) -> list[str]:
    """`V1,V2,...` split on the commas outside brackets and quotes ('[300],[300,600]' is two
    values); a GridError for an unclosed bracket or quote."""
    values, current, stack, quote = [], "", [], ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in _CLOSE.values():
            if not stack or stack.pop() != ch:
                raise GridError(f"{text!r} has an unmatched {ch!r}; check its brackets.")
        elif ch == "," and not stack:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    if quote or stack:
        raise GridError(f"{text!r} has an unclosed {quote or 'bracket'}; close it.")
    return [*values, current.strip()]


def parse_vary(texts: Sequence[str]) -> list[Vary]:
    """`--vary KEY=V1,V2,...` (each given once): the key and its values, as written."""
    out: dict[str, tuple[str, ...]] = {}
    for text in texts:
        key, sep, rest = text.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise GridError(f"--vary {text!r} is not KEY=V1,V2,... (e.g. --vary epochs=10,30).")
        if key in SWEEP_KEYS:
            raise GridError(f"--vary {key} is set by the sweep; {SWEEP_KEYS[key]}.")
        if key in RUNTIME_KEYS:
            raise GridError(f"--vary {key} does not change results; set it after 'with'.")
        if key in out:
            raise GridError(f"--vary {key} is given twice; give all its values in one --vary.")
        try:
            values = split_values(rest)
        except GridError as e:
            raise GridError(f"--vary {key}: {e}") from None
        if not any(values):
            raise GridError(f"--vary {key}= has no values; give some, e.g. --vary epochs=10,30.")
        if not all(values):
            raise GridError(f"--vary {text!r} has an empty value; remove the extra comma.")
        out[key] = tuple(dict.fromkeys(values))
    return list(out.items())


def _overlap(a: str, b: str) -> bool:
    """Whether config keys `a` and `b` set the same setting ('model' and 'model.x' do)."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def varied_words(vary: Sequence[Vary], words: Sequence[str] = ()) -> list[tuple[str, ...]]:
    """The product of the `--vary`d values, each a tuple of `KEY=V` words (one empty tuple
    without `--vary`); a GridError for a key also set in `words`."""
    for key, _ in vary:
        for w in words:
            if "=" in w and _overlap(key, w.split("=", 1)[0]):
                raise GridError(f"{key} is given both by --vary and after 'with' ({w}); keep one.")
    axes = [[f"{key}={v}" for v in values] for key, values in vary]
    return list(itertools.product(*axes))


def cells(
    datasets: Sequence[str],
    methods: Sequence[str],
    ablations: Sequence[str],
    seeds: Sequence[int],
    words: Sequence[str] = (),
    vary: Sequence[Vary] = (),
) -> list[Cell]:
    """Every cell, dataset by dataset; the ablations only for methods that have them; the
    seeds of one setting next to each other."""
    for d in datasets:
        if d not in CATALOG:
            raise GridError(f"unknown dataset {d!r}; use one of {', '.join(CATALOG)}.")
    check_words(words)
    combos = varied_words(vary, words)
    out = []
    for d in dict.fromkeys(datasets):
        for m in methods:
            for a in ablations:
                if a != "none" and not has_ablations(m):
                    continue
                out += [Cell(d, m, a, s, tuple(words), v) for v in combos for s in seeds]
    if not out:
        raise GridError("the grid has no cells: the ablations given apply to none of the methods.")
    return out


def check_distinct(cells: Sequence[Cell], configs: Sequence[dict[str, Any]]) -> None:
    """A GridError when two cells resolve to the same settings (runtime keys aside), e.g. two
    `--vary`d values that mean the same: they would share their runs."""
    seen: dict[str, Cell] = {}
    for cell, config in zip(cells, configs, strict=True):
        settings = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
        key = json.dumps(settings, sort_keys=True, default=str)
        if key in seen:
            raise GridError(
                f"{seen[key].label} and {cell.label} have the same settings; give each once."
            )
        seen[key] = cell
