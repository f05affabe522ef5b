"""The results table from run folders."""

from __future__ import annotations

import csv
import json

import pytest

from gksparse.report import collect, main, write_report


def write_run(root, run_id, dataset, method, seed, accs, spatial=True):
    d = root / dataset / str(run_id)
    d.mkdir(parents=True)
    config = {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "spatial": spatial,
        "lifetime": True,
    }
    (d / "config.json").write_text(json.dumps(config))
    budgets = {
        str(n): {stage: {"test": {"loss": 1.0, "accuracy": a}} for stage in ("stacked", "finetune")}
        for n, a in accs.items()
    }
    (d / "result.json").write_text(json.dumps({"pretrain": None, "budgets": budgets}))


def test_report_aggregates_seeds_and_ablations(tmp_path, capsys):
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5, 600: 0.7})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.7})
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 1, {300: 0.9}, spatial=False)
    (tmp_path / "mnistrotated" / "4").mkdir()  # a run that has not finished anything
    (tmp_path / "mnistrotated" / "4" / "config.json").write_text("{}")
    cells = collect(tmp_path)
    assert cells[("mnistrotated", "groupwtacnn", "", "stacked")][300] == [0.5, 0.7]
    assert cells[("mnistrotated", "groupwtacnn", "nospatial", "end-to-end")][300] == [0.9]

    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "| groupwtacnn | - | stacked | 60.00 ± 10.00 (2) | 70.00 |" in md
    assert "| groupwtacnn | nospatial | end-to-end | 90.00 |  |" in md
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert len(rows) == 2 * 2 + 2  # (full: 2 budgets, nospatial: 1) x 2 classifiers
    assert (tmp_path / "accuracy_mnistrotated.png").stat().st_size > 0


def test_report_on_an_empty_folder_says_what_is_missing(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no finished label budget" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path)
