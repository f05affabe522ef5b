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
  as mean ± sample std over seeds and the 95% confidence interval of the mean (Student's t);
  then per dataset the comparisons of `gksparse.evaluation.comparisons` (each pretrained
  method against its random encoder, group against plain sparsity, ablations against their
  method, encoders' probes against `pixels`, settings against each other), paired by seed:
  the difference in points, its 95% interval, the paired t-test's p and Holm's p;
- `report.csv`: the same cells, one line each; `comparisons.csv`: the comparisons;
- `accuracy_<dataset>.png`: a panel per classifier, test accuracy in % against the number of
  labels, a line per row with its 95% interval (a bar at each budget, a band between them;
  the rows' points stand a little apart at one budget).
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

from .data.catalog import x_label
from .data.files import atomic_write_text, natural_key
from .evaluation.comparisons import Comparison, Key, Setting, compare
from .evaluation.statistics import Summary, summarize
from .protocol.config import RUNTIME_KEYS
from .protocol.rundir.records import (
    CONFIG,
    RECORDS,
    RESULT,
    STAGE_LABELS,
    FolderRecords,
    RecordError,
)
from .protocol.tables import PROBES

# result.json's stage -> the row's classifier, in row order (stacked before end-to-end).
CLASSIFIERS = STAGE_LABELS
# result.json's probes (`budgets[n].probe`) -> the row's classifier, after the stages.
ROW_ORDER = (*CLASSIFIERS.values(), *PROBES.values())
# Config keys that do not change a run's numbers: runs differing only in them average together.
NOT_RESULTS = RUNTIME_KEYS
# Never part of a row's setting: seeds are what a row averages, the label budgets are columns
# (a run contributes to those it has), and the rest have columns or tables of their own.
# `probe` only adds rows: runs with and without it (older runs lack the key) average together.
NOT_SETTING = ("seed", "num_labeled", "dataset", "method", "spatial", "lifetime", "probe")
UNSET = "unset"  # a key missing from a run's config (no JSON text looks like this)
CELLS = (
    "Cells: mean ± sample std over seeds [95% confidence interval of the mean, Student's t]; "
    "(k): only k of the row's runs have that budget."
)
COMPARED = (
    "a - b in test accuracy points over the seeds both rows share: the mean difference "
    "[95% confidence interval], the paired t-test's p and p_holm (Holm's adjustment over one "
    "label budget and classifier)."
)
COMPARISON_COLUMNS = (
    *("dataset", "labels", "classifier", "a", "b", "n", "difference"),
    *("ci95_low", "ci95_high", "p", "p_holm", "verdict"),
)


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
    """One row's runs: (seed, test accuracy) of each by label budget, how many runs it holds,
    and the config values they share (JSON text; what rows of two methods are matched by)."""

    runs: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    seeds: int = 0
    config: dict[str, str] = field(default_factory=dict)

    @property
    def accuracies(self) -> dict[int, list[float]]:
        """Test accuracies by label budget, one per run."""
        return {n: [accuracy for _, accuracy in runs] for n, runs in self.runs.items()}


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


def _setting_keys(config: dict[str, Any]) -> set[str]:
    """The keys of `config` that may make a row's setting."""
    return set(config) - set(NOT_RESULTS) - set(NOT_SETTING)


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The config keys whose values differ between `configs` and that make a row's setting."""
    keys = set().union(*map(_setting_keys, configs))
    return sorted(k for k in keys if len({_json(c, k) for c in configs}) > 1)


def _show(value: str) -> str:
    """A value from `_json` as shown: strings bare, everything else as its JSON."""
    return json.loads(value) if value.startswith('"') else value


def setting_text(setting: Setting) -> str:
    """`epochs=3, train_size=3000`; '-' for none."""
    return ", ".join(f"{k}={_show(v)}" for k, v in setting) or "-"


def row_name(key: Key) -> str:
    """A row as plots and comparisons name it: `groupwtacnn nospatial epochs=3` (no classifier)."""
    _, method, abl, setting, _ = key
    return " ".join(filter(None, (method, abl, setting_text(setting) if setting else "")))


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
            shared = {k: _json(c, k) for k in _setting_keys(c)}  # the same in all the row's runs
            for label in {label for label, _ in run.accuracies}:
                rows[(*head, label)].seeds += 1
                rows[(*head, label)].config = shared
            for (label, n), accuracy in run.accuracies.items():
                rows[(*head, label)].runs.setdefault(n, []).append((_json(c, "seed"), accuracy))
    return dict(sorted(rows.items(), key=lambda item: _order(item[0])))


def _order(key: Key) -> tuple[Any, ...]:
    dataset, method, abl, setting, label = key
    setting_order = [(k, natural_key(v)) for k, v in setting]
    return dataset, method, abl, setting_order, ROW_ORDER.index(label)


def _cell(values: list[float], seeds: int) -> str:
    """Mean ± std [95% CI] in %, and how many runs when fewer than the row's seeds have the
    budget; one run: its accuracy alone."""
    if not values:
        return ""
    s = summarize(values)
    text = f"{100 * s.mean:.2f}"
    if s.std is not None and s.ci95 is not None:
        text += f" ± {100 * s.std:.2f} [{100 * s.ci95[0]:.2f}, {100 * s.ci95[1]:.2f}]"
    return text if len(values) == seeds else f"{text} ({len(values)})"


def _md(text: str) -> str:
    return text.replace("|", "\\|")  # a table cell must not end at a '|' inside a value


def _table(rows: dict[Key, Row], dataset: str) -> str:
    """`dataset`'s Markdown table: a line per row, a column per label budget."""
    keys = [k for k in rows if k[0] == dataset]
    budgets = sorted({n for k in keys for n in rows[k].runs})
    columns = ["method", "ablation", "classifier", "setting", "seeds", *map(str, budgets)]
    lines = [
        f"### {dataset}: test accuracy (%)\n",
        CELLS + "\n",
        "| " + " | ".join(columns) + " |",
        "|---|---|---|---|---|" + "---|" * len(budgets),
    ]
    for k in keys:
        row = rows[k]
        cells = [_cell(row.accuracies.get(n, []), row.seeds) for n in budgets]
        head = [k[1], k[2] or "-", k[4], _md(setting_text(k[3])), str(row.seeds)]
        lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines) + "\n\n"


def comparison_line(c: Comparison) -> str:
    """One comparison in report.md: labels, classifier, `a - b`, then the difference in points
    with its 95% CI, p, Holm's p, the seeds paired and the verdict."""
    r = c.result
    head = f"- {c.labels} labels, {c.classifier}: {row_name(c.a)} - {row_name(c.b)}"
    if r.difference is None or r.ci95 is None or r.p is None or c.p_holm is None:
        return f"{head}: {c.verdict} ({r.n})"
    lo, hi = r.ci95
    return (
        f"{head}: {r.difference:+.2f} points [{lo:+.2f}, {hi:+.2f}], p = {r.p:.3g}, "
        f"p_holm = {c.p_holm:.3g}, {r.n} seeds: {c.verdict}"
    )


def markdown(
    rows: dict[Key, Row], skipped: Sequence[Skipped] = (), comparisons: Sequence[Comparison] = ()
) -> str:
    """Per dataset a Markdown table and its comparisons, then the run folders that do not
    count."""
    out = io.StringIO()
    for dataset in sorted({k[0] for k in rows}):
        out.write(_table(rows, dataset))
        lines = [comparison_line(c) for c in comparisons if c.dataset == dataset]
        if lines:
            out.write(f"### {dataset}: comparisons\n\n{COMPARED}\n\n" + "\n".join(lines) + "\n\n")
    if skipped:
        out.write("### Runs not counted\n\n| folder | status |\n|---|---|\n")
        for s in skipped:
            out.write(f"| {_md(str(s.folder))} | {_md(s.reason)} |\n")
        out.write("\n")
    return out.getvalue()


def _number(x: float | None, spec: str) -> str:
    """`x` formatted by `spec` for a CSV cell; an empty cell for no number."""
    return "" if x is None else format(x, spec)


def csv_text(rows: dict[Key, Row]) -> str:
    """report.csv: one line per cell, test accuracy as a fraction (`runs`: runs in the cell;
    `std` (sample) and the 95% CI of the mean empty for one run)."""
    out = io.StringIO()
    w = csv.writer(out)
    header = ["dataset", "method", "ablation", "classifier", "n", "mean", "std", "runs"]
    w.writerow([*header, "setting", "seeds", "ci95_low", "ci95_high"])
    for (dataset, method, abl, setting, label), row in rows.items():
        for n, v in sorted(row.accuracies.items()):
            s = summarize(v)
            lo, hi = s.ci95 or (None, None)
            numbers = [_number(x, ".6f") for x in (s.mean, s.std)]
            head = [dataset, method, abl, label, n, *numbers, len(v), setting_text(setting)]
            w.writerow([*head, row.seeds, _number(lo, ".6f"), _number(hi, ".6f")])
    return out.getvalue()


def comparisons_csv(comparisons: Sequence[Comparison]) -> str:
    """comparisons.csv: one line per comparison (`difference` = a - b in points over the `n`
    seeds both rows share); empty cells where there is no number."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(COMPARISON_COLUMNS)
    for c in comparisons:
        r = c.result
        lo, hi = r.ci95 or (None, None)
        numbers = [_number(x, ".6g") for x in (r.difference, lo, hi, r.p, c.p_holm)]
        names = [row_name(c.a), row_name(c.b)]
        w.writerow([c.dataset, c.labels, c.classifier, *names, r.n, *numbers, c.verdict])
    return out.getvalue()


def curves(rows: dict[Key, Row], dataset: str) -> dict[str, dict[str, dict[int, Summary]]]:
    """The accuracy plot's panels for `dataset`: classifier -> row name -> {budget: summary of
    the test accuracies}, panels and lines in row order."""
    out: dict[str, dict[str, dict[int, Summary]]] = defaultdict(dict)
    for key, row in rows.items():
        if key[0] == dataset:
            budgets = sorted(row.accuracies.items())
            out[key[4]][row_name(key)] = {n: summarize(v) for n, v in budgets}
    return {label: out[label] for label in ROW_ORDER if label in out}


def write_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Collect the runs under `root`, write report.md, report.csv, comparisons.csv and the
    PNGs; returns the .md.

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
    comparisons = compare(rows, ROW_ORDER)
    md = out / "report.md"
    atomic_write_text(md, markdown(rows, skipped, comparisons))
    atomic_write_text(out / "report.csv", csv_text(rows))
    atomic_write_text(out / "comparisons.csv", comparisons_csv(comparisons))
    for dataset in sorted({k[0] for k in rows}):
        path = out / f"accuracy_{dataset}.png"
        save_accuracy_curves(curves(rows, dataset), path, title=dataset, xlabel=x_label(dataset))
    return md


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
    csvs = f"{md.with_suffix('.csv')}, {md.with_name('comparisons.csv')}"
    print(f"written: {md}, {csvs} and accuracy_*.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
