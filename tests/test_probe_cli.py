"""`python -m gksparse.probe`: probes of finished runs, old ones too, and the pixels baseline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from gksparse.probe import MetricsLog, main
from gksparse.protocol.pipeline import ProtocolConfig, run_protocol
from gksparse.report import read_runs, table

REPO = Path(__file__).resolve().parents[1]
DATA = str(Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data"))
OLD_RUN = REPO / "tests" / "old_runs" / "mnistrotated" / "1"
needs_data = pytest.mark.skipif(
    not (Path(DATA) / "mnist").is_dir(), reason="needs the MNIST files in $GKSPARSE_DATA"
)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """One BLAS thread: L-BFGS on small matrices is much slower on a busy machine's threads."""
    with threadpool_limits(1):
        yield


def read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run of Rotated MNIST, with the records sacred would write."""
    folder = tmp_path_factory.mktemp("results") / "mnistrotated" / "1"
    cfg = ProtocolConfig(
        dataset="mnistrotated",
        method="groupwtacnn",
        seed=1,
        train_size=240,
        test_size=60,
        epochs=1,
        num_labeled=[200],
        filters=8,
        groups=2,
        pictures=0,
        progress=False,
        data_dir=DATA,
    )
    log = MetricsLog()
    with threadpool_limits(1):
        run_protocol(cfg, folder, log)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED", "command": "run"}))
    (folder / "metrics.json").write_text(json.dumps(log.merged(None)))
    return folder


@needs_data
@pytest.mark.slow
def test_a_smoke_run_has_both_probes_and_probing_again_rewrites_them(smoke_run, capsys):
    before = read(smoke_run, "result.json")
    probe = before["budgets"]["200"]["probe"]
    assert set(probe) == {"linear", "knn"} and probe["knn"]["k"] == 20
    assert set(probe["linear"]) >= {"accuracy", "loss", "C", "val_accuracy"}
    metrics = read(smoke_run, "metrics.json")
    assert metrics["n200.probe.linear.test_accuracy"]["values"] == [probe["linear"]["accuracy"]]

    assert main([str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert "n=200 linear probe: test accuracy" in out and "n=200 k-NN: test accuracy" in out
    assert read(smoke_run, "result.json") == before  # same seed, same numbers
    again = read(smoke_run, "metrics.json")
    assert again["n200.probe.knn.test_accuracy"]["values"] == [probe["knn"]["accuracy"]]
    assert again["n200.stacked.val_loss"] == metrics["n200.stacked.val_loss"]  # left alone
    rows = table(read_runs(smoke_run.parent.parent)[0])
    labels = {key[4] for key in rows}
    assert labels == {"stacked", "end-to-end", "linear probe", "k-NN"}


@needs_data
@pytest.mark.slow
def test_a_run_from_before_the_probes_gets_them(tmp_path):
    folder = tmp_path / "mnistrotated" / "1"
    shutil.copytree(OLD_RUN, folder)
    before = read(folder, "result.json")
    assert "probe" not in read(folder, "config.json") and "probe" not in before["budgets"]["200"]
    assert main([str(folder), "--budgets", "200", "--data-dir", DATA]) == 0
    after = read(folder, "result.json")
    assert set(after["budgets"]["200"]["probe"]) == {"linear", "knn"}
    after["budgets"]["200"].pop("probe")
    assert after == before  # the protocol's numbers are untouched
    metrics = read(folder, "metrics.json")
    assert "n200.probe.linear.test_accuracy" in metrics and "n200.finetune.loss" in metrics


@needs_data
@pytest.mark.slow
def test_the_pixels_baseline_is_a_run_the_report_lists_as_pixels(tmp_path, capsys):
    words = ["with", "smoke", "seed=1", f"data_dir={DATA}", "progress=False"]
    assert main(["--pixels", "mnistrotated", "--results", str(tmp_path), *words]) == 0
    folder = tmp_path / "mnistrotated" / "1"
    assert f"run folder: {folder}" in capsys.readouterr().out
    config, record = read(folder, "config.json"), read(folder, "run.json")
    assert config["method"] == "pixels" and config["seed"] == 1
    assert record["status"] == "COMPLETED" and record["command"] == "probe --pixels"
    assert record["start_time"] <= record["stop_time"]
    result = read(folder, "result.json")
    budget = result["budgets"]["200"]
    assert result["pretrain"] is None and (budget["n_train"], budget["n_test"]) == (200, 60)
    assert budget["probe"]["linear"]["accuracy"] > 0.2  # pixels of digits: well above chance
    rows = table(read_runs(tmp_path)[0])
    assert {k[1:] for k in rows} == {
        ("pixels", "", (), "linear probe"),
        ("pixels", "", (), "k-NN"),
    }
    assert main([str(folder)]) == 0  # a pixels run probes again to the same numbers
    assert read(folder, "result.json") == result
    assert main(["--pixels", "mnistrotated", "--results", str(tmp_path), *words]) == 0
    assert (tmp_path / "mnistrotated" / "2" / "result.json").is_file()  # the next run id


def write_records(folder: Path, status: str = "COMPLETED", result: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": "mnistrotated", "seed": 1}))
    (folder / "run.json").write_text(json.dumps({"status": status}))
    budgets = {"200": {"stacked": {}, "finetune": {}}}
    text = json.dumps({"pretrain": {}, "budgets": budgets}) if result is None else result
    (folder / "result.json").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("make", "argv", "says"),
    [
        (lambda d: d / "nowhere", [], "is not a run folder"),
        (lambda d: d, [], "is not a run folder"),
        (lambda d: write_records(d / "r", status="RUNNING"), [], "not finished (status RUNNING)"),
        (lambda d: write_records(d / "r", result="{"), [], "result.json is damaged"),
        (lambda d: write_records(d / "r"), ["--budgets", "300"], "no finished label budget 300"),
    ],
)
def test_a_missing_damaged_or_unfinished_run_is_one_sentence(tmp_path, capsys, make, argv, says):
    folder = make(tmp_path)
    assert main([str(folder), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_the_module_exits_2_without_a_traceback(tmp_path):
    folder = write_records(tmp_path / "r")
    (folder / "run.json").write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "gksparse.probe", str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "run.json is damaged" in done.stderr
