"""One run's small table of test accuracies, as a run prints it at its end (and the report
names its columns the same way). Plain text, no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rundir.records import STAGE_LABELS

PROBES = {"linear": "linear probe", "knn": "k-NN"}  # result key: how tables name the probe


def _run_cells(budget: dict[str, Any], probes: bool) -> list[str]:
    """A budget's test accuracies (%) for `run_table`, '-' for what it lacks."""
    values = [budget.get(s, {}).get("test", {}).get("accuracy") for s in STAGE_LABELS]
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
