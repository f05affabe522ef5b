"""How `run_cell` reads a cell's end: from the run folder, not from the child's output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sweeps import CELL, CONFIG, make_run

from gksparse.sweep import cell, plan

# A stand-in for the experiment script: it finishes the run in `folder` and prints its
# 'run folder:' line with a log line spliced in, as sacred's two copying processes can.
CHILD = """
import json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
(folder / "config.json").write_text(sys.argv[2])
(folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
result = {"pretrain": None, "budgets": {"300": {"finetune": {"test": {"accuracy": 0.5}}}}}
(folder / "result.json").write_text(json.dumps(result))
print(f"run folder: {folder}INFO - mnistrotated - Completed after 0:00:08")
"""


def run(tmp_path: Path, monkeypatch, folder: Path) -> cell.Outcome:
    def command(plan_, results, gpus=0):
        return [sys.executable, "-c", CHILD, str(folder), json.dumps(CONFIG)]

    monkeypatch.setattr(cell, "command", command)
    results = tmp_path / "R"
    planned = plan.decide(CELL, CONFIG, results)
    job = cell.Job(planned, str(results), str(tmp_path), log=str(tmp_path / "log.txt"))
    return cell.run_cell(job)


@pytest.mark.parametrize("earlier", [None, "FAILED"])
def test_a_cell_that_completed_names_its_run_folder_whatever_its_output_says(
    tmp_path, monkeypatch, earlier
):
    folder = tmp_path / "R" / "mnistrotated" / "1"
    if earlier:  # a run that failed before: the cell resumes it
        make_run(tmp_path / "R", 1, earlier)
    outcome = run(tmp_path, monkeypatch, folder)
    assert outcome.action == (plan.RESUME if earlier else plan.RUN)
    assert (outcome.status, outcome.folder) == (cell.COMPLETED, str(folder)), outcome.line()
    assert outcome.accuracy == "test accuracy 50.0% (n=300 end-to-end)"
