"""Many runs -> the paper's table: `python -m gksparse.report results/ [--out DIR]`.

Reads every run folder (`config.json`, `run.json`, `result.json`) under the given folder.
Only runs whose `run.json` says COMPLETED count; failed, interrupted and still running ones,
and folders with a missing or damaged record, are listed apart (in `report.md` below the
tables, and on stderr). Writes, each atomically:

- `report.md`: one table per dataset; a row per method, ablation, setting and classifier
  (stacked, end-to-end, and `linear probe` and `k-NN` for runs with probes; the raw-pixel
  baseline of `gksparse.probe --pixels` is method `pixels`, with the probe rows only),
  where the setting is every config value that differs between the dataset's completed runs
  (the seed, the label budgets and keys that do not change the numbers aside); columns: the
  number of seeds the row averages, then the label budgets, each cell the test accuracy in %
  as mean ± std over seeds;
- `report.csv`: the same, one line per cell;
- `accuracy_<dataset>.png`: test accuracy in % against the number of labels, a line per row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.files import atomic_write_text, natural_key
from .protocol.config import RUNTIME_KEYS
from .protocol.rundir.records import (
    CONFIG,
    RECORDS,
    RESULT,
    STAGE_LABELS,
    FolderRecords,
    RecordError,
)

# result.json's stage -> the row's classifier, in row order (stacked before end-to-end).
CLASSIFIERS = STAGE_LABELS
# result.json's probes (`budgets[n].probe`) -> the row's classifier, after the stages.
PROBES = {"linear": "linear probe", "knn": "k-NN"}
ROW_ORDER = (*CLASSIFIERS.values(), *PROBES.values())
# Config keys that do not change a run's numbers: runs differing only in them average together.
NOT_RESULTS = RUNTIME_KEYS
# Never part of a row's setting: seeds are what a row averages, the label budgets are columns
# (a run contributes to those it has), and the rest have columns or tables of their own.
# `probe` only adds rows: runs with and without it (older runs lack the key) average together.
NOT_SETTING = ("seed", "num_labeled", "dataset", "method", "spatial", "lifetime", "probe")
UNSET = "unset"  # a key missing from a run's config (no JSON text looks like this)
COIL_LABELS = "training frames per object (COIL-100)"
X_LABELS = {"coil100": COIL_LABELS, "necanimal": COIL_LABELS}  # necanimal classifies COIL-100
VIDEO_LABELS = "labeled training videos"  # mnistrotated, cifar10scanned, videos

Setting = tuple[tuple[str, str], ...]  # (key, value as JSON), sorted by key
Key = tuple[str, str, str, Setting, str]  # dataset, method, ablation, setting, classifier


@dataclass(frozen=True)
class Run:
    """A completed run: its folder, its config and test accuracy by (classifier, budget)."""

    folder: Path
    config: dict[str, Any]
    accuracies: dict[tuple[str, int], float]


@dataclass(frozen=True)
class Skipped:
    """A run folder that does not count, and why: sacred's status or an unreadable record."""

    folder: Path
    reason: str


@dataclass
class Row:
    """Test accuracies of one row by label budget (one per run), and how many runs it holds."""

    accuracies: dict[int, list[float]] = field(default_factory=dict)
    seeds: int = 0


def ablation(config: dict[str, Any]) -> str:
    """'' for the full method, else the named configs that switch sparsity off."""
    off = [
        name
        for name, key in (("nospatial", "spatial"), ("nolifetime", "lifetime"))
        if not config.get(key, True)
    ]
    return "+".join(off)


def _accuracies(result: Any, path: Path) -> dict[tuple[str, int], float]:
    """Test accuracy by (classifier, budget) in a result.json: the stages', then the probes'."""
    try:
        out = {}
        for n, budget in (result["budgets"] or {}).items():
            for stage, label in CLASSIFIERS.items():
                if stage in budget:
                    out[label, int(n)] = float(budget[stage]["test"]["accuracy"])
            for probe, label in PROBES.items():
                if probe in budget.get("probe", {}):
                    out[label, int(n)] = float(budget["probe"][probe]["accuracy"])
        return out
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RecordError(path, "no test accuracy per label budget") from None


def read_run(folder: Path) -> Run | Skipped:
    """The completed run in `folder`, else why it does not count."""
    run = FolderRecords(folder)
    try:
        status = run.status()
        if status != "COMPLETED":
            return Skipped(folder, status)
        config = run.read_json(CONFIG)
        if not (
            isinstance(config, dict)
            and all(isinstance(config.get(k), str) for k in ("dataset", "method"))
        ):
            raise RecordError(run / CONFIG, "no dataset or method")
        return Run(folder, config, _accuracies(run.read_json(RESULT), run / RESULT))
    except RecordError as e:
        return Skipped(folder, f"unreadable record: {e.path.name} ({e.why})")


def read_runs(root: str | Path) -> tuple[list[Run], list[Skipped]]:
    """The completed runs under `root` and the run folders that do not count, in folder order."""
    folders = {path.parent for name in RECORDS for path in Path(root).rglob(name)}
    runs: list[Run] = []
    skipped: list[Skipped] = []
    for folder in sorted(folders, key=lambda f: natural_key(str(f))):
        run = read_run(folder)
        (runs if isinstance(run, Run) else skipped).append(run)
    return runs, skipped


def _json(config: dict[str, Any], key: str) -> str:
    """`config[key]` as text that compares stably (dicts with sorted keys), or UNSET."""
    return json.dumps(config[key], sort_keys=True) if key in config else UNSET


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The config keys whose values differ between `configs` and that make a row's setting."""
    keys = set().union(*configs) - set(NOT_RESULTS) - set(NOT_SETTING)
    return sorted(k for k in keys if len({_json(c, k) for c in configs}) > 1)


def _show(value: str) -> str:
    """A value from `_json` as shown: strings bare, everything else as its JSON."""
    return json.loads(value) if value.startswith('"') else value


def setting_text(setting: Setting) -> str:
    """`epochs=3, train_size=3000`; '-' for none."""
    return ", ".join(f"{k}={_show(v)}" for k, v in setting) or "-"


def table(runs: list[Run]) -> dict[Key, Row]:
    """The report's rows in order: runs grouped by dataset, method, ablation, setting (see
    `varying_keys`, per dataset and method: what differs between methods anyway, such as
    their clipnorm, is no setting) and classifier; a run adds to the budgets it has."""
    by_method: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_method[run.config["dataset"], run.config["method"]].append(run)
    rows: dict[Key, Row] = defaultdict(Row)
    for (dataset, _), group in by_method.items():
        keys = varying_keys([run.config for run in group])
        for run in group:
            c = run.config
            setting = tuple((k, _json(c, k)) for k in keys)
            head = (dataset, c["method"], ablation(c), setting)
            for label in {label for label, _ in run.accuracies}:
                rows[(*head, label)].seeds += 1
            for (label, n), accuracy in run.accuracies.items():
                rows[(*head, label)].accuracies.setdefault(n, []).append(accuracy)
    return dict(sorted(rows.items(), key=lambda item: _order(item[0])))


def _order(key: Key) -> tuple[Any, ...]:
    dataset, method, abl, setting, label = key
    setting_order = [(k, natural_key(v)) for k, v in setting]
    return dataset, method, abl, setting_order, ROW_ORDER.index(label)


def _cell(values: list[float], seeds: int) -> str:
    """Mean ± std in %, and how many runs when fewer than the row's seeds have the budget."""
    if not values:
        return ""
    text = f"{100 * float(np.mean(values)):.2f}"
    if len(values) > 1:
        text += f" ± {100 * float(np.std(values)):.2f}"
    return text if len(values) == seeds else f"{text} ({len(values)})"


def _md(text: str) -> str:
    return text.replace("|", "\\|")  # a table cell must not end at a '|' inside a value


def markdown(rows: dict[Key, Row], skipped: Sequence[Skipped] = ()) -> str:
    """One Markdown table per dataset, then the run folders that do not count."""
    out = io.StringIO()
    for dataset in sorted({k[0] for k in rows}):
        keys = [k for k in rows if k[0] == dataset]
        budgets = sorted({n for k in keys for n in rows[k].accuracies})
        out.write(f"### {dataset}: test accuracy (%)\n\n")
        out.write("| method | ablation | classifier | setting | seeds | ")
        out.write(" | ".join(map(str, budgets)) + " |\n")
        out.write("|---|---|---|---|---|" + "---|" * len(budgets) + "\n")
        for k in keys:
            row = rows[k]
            cells = [_cell(row.accuracies.get(n, []), row.seeds) for n in budgets]
            head = [k[1], k[2] or "-", k[4], _md(setting_text(k[3])), str(row.seeds)]
            out.write("| " + " | ".join(head + cells) + " |\n")
        out.write("\n")
    if skipped:
        out.write("### Runs not counted\n\n| folder | status |\n|---|---|\n")
        for s in skipped:
            out.write(f"| {_md(str(s.folder))} | {_md(s.reason)} |\n")
        out.write("\n")
    return out.getvalue()


def csv_text(rows: dict[Key, Row]) -> str:
    """report.csv: one line per cell, test accuracy as a fraction (`runs`: runs in the cell)."""
    out = io.StringIO()
    w = csv.writer(out)
    header = ["dataset", "method", "ablation", "classifier", "n", "mean", "std", "runs"]
    w.writerow([*header, "setting", "seeds"])
    for (dataset, method, abl, setting, label), row in rows.items():
        for n, v in sorted(row.accuracies.items()):
            mean, std = f"{np.mean(v):.6f}", f"{np.std(v):.6f}"
            text = setting_text(setting)
            w.writerow([dataset, method, abl, label, n, mean, std, len(v), text, row.seeds])
    return out.getvalue()


def x_label(dataset: str) -> str:
    """The accuracy plot's x axis: what one label of `dataset`'s budgets is."""
    return X_LABELS.get(dataset, VIDEO_LABELS)


def curves(rows: dict[Key, Row], dataset: str) -> dict[str, dict[int, float]]:
    """The accuracy plot's lines for `dataset`, in row order: name -> {budget: mean accuracy}."""
    out = {}
    for (ds, method, abl, setting, label), row in rows.items():
        if ds == dataset:
            shown = setting_text(setting) if setting else ""
            name = " ".join(filter(None, (method, abl, label, shown)))
            out[name] = {n: float(np.mean(v)) for n, v in row.accuracies.items()}
    return out


def write_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Collect the runs under `root`, write report.md, report.csv and the PNGs; returns the .md.

    The run folders that do not count are printed on stderr, one line each.
    """
    from .protocol.plots import save_accuracy_curves

    runs, skipped = read_runs(root)
    for s in skipped:
        print(f"not counted: {s.folder}: {s.reason}", file=sys.stderr)
    rows = table(runs)
    if not rows:
        raise FileNotFoundError(
            f"no finished label budget found under {root} in a COMPLETED run; point it at a "
            "results folder holding run folders (config.json, run.json and result.json)."
        )
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    atomic_write_text(md, markdown(rows, skipped))
    atomic_write_text(out / "report.csv", csv_text(rows))
    for dataset in sorted({k[0] for k in rows}):
        path = out / f"accuracy_{dataset}.png"
        save_accuracy_curves(curves(rows, dataset), path, title=dataset, xlabel=x_label(dataset))
    return md


def _run_cells(budget: dict[str, Any], probes: bool) -> list[str]:
    """A budget's test accuracies (%) for `run_table`, '-' for what it lacks."""
    values = [budget.get(s, {}).get("test", {}).get("accuracy") for s in CLASSIFIERS]
    if probes:
        values += [budget.get("probe", {}).get(p, {}).get("accuracy") for p in PROBES]
    return ["-" if v is None else f"{100 * v:.1f}" for v in values]


def run_table(result: dict[str, Any], budgets: list[int], folder: Path | str) -> str:
    """One run's small table: test accuracy (%) per label budget, stacked and end-to-end
    (and the linear probe and k-NN where the run has them), then its reconstruction losses."""
    done = [b for n in budgets if (b := result.get("budgets", {}).get(str(n))) is not None]
    probes = any("probe" in b for b in done)
    names = ["stacked", "end-to-end", *(PROBES.values() if probes else ())]
    widths = [9, 12, 13, 9][: len(names)]  # the stages' as before the probes
    head = " ".join(f"{name:>{w}}" for name, w in zip(names, widths, strict=True))
    lines = [f"test accuracy (%) of {folder}:", f"  labels {head}"]
    for n in budgets:
        b = result.get("budgets", {}).get(str(n))
        if b is None:
            continue
        cells = _run_cells(b, probes)
        lines.append(
            f"  {n:>6} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    pre = result.get("pretrain") or {}
    if "test_loss" in pre:
        lines.append(
            f"  reconstruction loss: train {pre['train_loss']:.4g}, test {pre['test_loss']:.4g}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gksparse.report", description=__doc__)
    parser.add_argument("results", help="folder holding run folders, e.g. results/")
    parser.add_argument("--out", help="where to write the report (default: the results folder)")
    args = parser.parse_args(argv)
    try:
        md = write_report(args.results, args.out)
    except (FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md.read_text(encoding="utf-8"), end="")
    print(f"written: {md}, {md.with_suffix('.csv')} and accuracy_*.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
