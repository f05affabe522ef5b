"""Many runs -> the paper's table: `python -m gksparse.report results/ [--out DIR]`.

Reads every run folder (`config.json` + `result.json`) under the given folder and writes
`report.md` (one table per dataset: rows method, ablation and classifier; columns label
budgets; test accuracy in % as mean ± std over seeds), `report.csv` (the same, one row per
cell) and `accuracy_<dataset>.png` (test accuracy against the number of labels).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFIERS = {"stacked": "stacked", "finetune": "end-to-end"}
Key = tuple[str, str, str, str]  # dataset, method, ablation, classifier


def ablation(config: dict[str, Any]) -> str:
    """'' for the full method, else the named configs that switch sparsity off."""
    off = [
        name
        for name, key in (("nospatial", "spatial"), ("nolifetime", "lifetime"))
        if not config.get(key, True)
    ]
    return "+".join(off)


def collect(root: str | Path) -> dict[Key, dict[int, list[float]]]:
    """Test accuracies by (dataset, method, ablation, classifier) and budget, one per run."""
    cells: dict[Key, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for config_path in sorted(Path(root).rglob("config.json")):
        result_path = config_path.with_name("result.json")
        if not result_path.is_file():
            continue
        try:
            config = json.loads(config_path.read_text())
            result = json.loads(result_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {config_path.parent}: unreadable record ({e})", file=sys.stderr)
            continue
        for n, budget in result.get("budgets", {}).items():
            for stage, label in CLASSIFIERS.items():
                if stage in budget:
                    key = (config["dataset"], config["method"], ablation(config), label)
                    cells[key][int(n)].append(budget[stage]["test"]["accuracy"])
    return cells


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = 100 * float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * float(np.std(values)):.2f} ({len(values)})"


def markdown(cells: dict[Key, dict[int, list[float]]]) -> str:
    """One Markdown table per dataset."""
    out = io.StringIO()
    for dataset in sorted({k[0] for k in cells}):
        keys = sorted(k for k in cells if k[0] == dataset)
        budgets = sorted({n for k in keys for n in cells[k]})
        out.write(f"### {dataset}: test accuracy (%)\n\n")
        out.write("| method | ablation | classifier | " + " | ".join(map(str, budgets)) + " |\n")
        out.write("|---|---|---|" + "---|" * len(budgets) + "\n")
        for k in keys:
            row = [_cell(cells[k].get(n, [])) for n in budgets]
            out.write(f"| {k[1]} | {k[2] or '-'} | {k[3]} | " + " | ".join(row) + " |\n")
        out.write("\n")
    return out.getvalue()


def write_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Collect the runs under `root`, write report.md, report.csv and the PNGs; returns the .md."""
    from .plots import save_accuracy_curves

    cells = collect(root)
    if not cells:
        raise FileNotFoundError(
            f"no finished label budget found under {root}; point it at a results folder "
            "holding run folders (config.json and result.json)."
        )
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(markdown(cells))
    with open(out / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "ablation", "classifier", "n", "mean", "std", "runs"])
        for k in sorted(cells):
            for n in sorted(cells[k]):
                v = cells[k][n]
                w.writerow([*k, n, f"{np.mean(v):.6f}", f"{np.std(v):.6f}", len(v)])
    for dataset in sorted({k[0] for k in cells}):
        curves = {
            " ".join(filter(None, k[1:])): {n: float(np.mean(v)) for n, v in cells[k].items()}
            for k in cells
            if k[0] == dataset
        }
        save_accuracy_curves(curves, out / f"accuracy_{dataset}.png", title=dataset)
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
    print(md.read_text(), end="")
    print(f"written: {md}, {md.with_suffix('.csv')} and accuracy_*.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
