"""The results table from run folders."""

from __future__ import annotations

import csv
import json
import os
import stat

import pytest

from gksparse.protocol import plots
from gksparse.report import main, read_runs, run_table, table, write_report, x_label

SMOKE = {"epochs": 1, "train_size": 100, "test_size": 50, "filters": 16}
SMALL = {"epochs": 3, "train_size": 3000, "test_size": 1000, "filters": 64}


def write_run(
    root, run_id, dataset, method, seed, accs, *, status="COMPLETED", spatial=True, **config
):
    """A run folder as sacred and the protocol write it; `accs`: budget -> test accuracy."""
    d = root / dataset / str(run_id)
    d.mkdir(parents=True)
    config = {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "spatial": spatial,
        "lifetime": True,
        "num_labeled": sorted(accs),
        **SMALL,
        "device": None,
        "data_dir": None,
        **config,
    }
    (d / "config.json").write_text(json.dumps(config))
    (d / "run.json").write_text(json.dumps({"status": status, "result": None}))
    budgets = {
        str(n): {stage: {"test": {"loss": 1.0, "accuracy": a}} for stage in ("stacked", "finetune")}
        for n, a in accs.items()
    }
    (d / "result.json").write_text(json.dumps({"pretrain": None, "budgets": budgets}))
    return d


def table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]


def test_report_aggregates_seeds_and_ablations(tmp_path, capsys):
    # updated: rows now carry setting and seeds columns, and the cell's run count shows only
    # where it differs from the row's seeds (the 600 budget of one of two seeds)
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5, 600: 0.7})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.7})
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 1, {300: 0.9}, spatial=False)
    rows = table(read_runs(tmp_path)[0])
    assert rows[("mnistrotated", "groupwtacnn", "", (), "stacked")].accuracies[300] == [0.5, 0.7]
    nospatial = rows[("mnistrotated", "groupwtacnn", "nospatial", (), "end-to-end")]
    assert nospatial.accuracies == {300: [0.9]} and nospatial.seeds == 1

    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "| groupwtacnn | - | stacked | - | 2 | 60.00 ± 10.00 | 70.00 (1) |" in md
    assert "| groupwtacnn | nospatial | end-to-end | - | 1 | 90.00 |  |" in md
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert len(rows) == 2 * 2 + 2  # (full: 2 budgets, nospatial: 1) x 2 classifiers
    assert (tmp_path / "accuracy_mnistrotated.png").stat().st_size > 0


def test_only_completed_runs_count_and_the_others_are_listed_apart(tmp_path, capsys):
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.9}, status="FAILED")
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 3, {300: 0.1}, status="RUNNING")
    write_run(tmp_path, 10, "mnistrotated", "groupwtacnn", 4, {300: 0.2}, status="INTERRUPTED")
    assert main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| groupwtacnn | - | stacked | - | 1 | 50.00 |" in out
    apart = out[out.index("### Runs not counted") :]
    run = tmp_path / "mnistrotated"
    assert table_lines(apart) == [
        "| folder | status |",
        f"| {run / '2'} | FAILED |",
        f"| {run / '3'} | RUNNING |",
        f"| {run / '10'} | INTERRUPTED |",
    ]
    assert f"not counted: {run / '2'}: FAILED" in err.splitlines()
    assert f"not counted: {run / '3'}: RUNNING" in err.splitlines()
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == out


def test_smoke_and_small_runs_are_different_rows(tmp_path, capsys):
    write_run(tmp_path, 1, "coil100", "groupwtacnn", 1, {4: 0.2}, **SMOKE)
    write_run(tmp_path, 2, "coil100", "groupwtacnn", 1, {4: 0.6}, **SMALL)
    write_run(tmp_path, 3, "coil100", "groupwtacnn", 2, {4: 0.8}, **SMALL)
    assert main([str(tmp_path)]) == 0
    lines = table_lines(capsys.readouterr().out)
    smoke = "epochs=1, filters=16, test_size=50, train_size=100"
    small = "epochs=3, filters=64, test_size=1000, train_size=3000"
    assert f"| groupwtacnn | - | stacked | {smoke} | 1 | 20.00 |" in lines
    assert f"| groupwtacnn | - | stacked | {small} | 2 | 70.00 ± 10.00 |" in lines
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert {
        (r["setting"], r["seeds"], r["mean"]) for r in rows if r["classifier"] == "stacked"
    } == {
        (smoke, "1", "0.200000"),
        (small, "2", "0.700000"),
    }


def test_seeds_of_one_config_average_in_one_row_whatever_the_runtime_keys(tmp_path, capsys):
    # device, data_dir and progress do not change the numbers; a run with more label budgets
    # adds a column, not a row; a dict value compares by content, not by key order
    one = {"device": "cuda", "data_dir": "/a", "progress": True, "opts": {"a": 1, "b": 2}}
    two = {"device": "cpu", "data_dir": "/b", "progress": False, "opts": {"b": 2, "a": 1}}
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5, 600: 0.7}, **one)
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.7}, **two)
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 3, {300: 0.4}, opts={"a": 2, "b": 2})
    assert main([str(tmp_path)]) == 0
    lines = table_lines(capsys.readouterr().out)
    assert lines[0] == "| method | ablation | classifier | setting | seeds | 300 | 600 |"
    assert (
        '| groupwtacnn | - | stacked | opts={"a": 1, "b": 2} | 2 | 60.00 ± 10.00 | 70.00 (1) |'
        in lines
    )
    assert '| groupwtacnn | - | stacked | opts={"a": 2, "b": 2} | 1 | 40.00 |  |' in lines
    assert len(lines) == 1 + 2 * 2


def test_a_key_one_run_lacks_is_shown_as_unset(tmp_path, capsys):
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5}, carry_head=True)
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 1, {300: 0.6})
    assert main([str(tmp_path)]) == 0
    lines = table_lines(capsys.readouterr().out)
    assert "| groupwtacnn | - | stacked | carry_head=true | 1 | 50.00 |" in lines
    assert "| groupwtacnn | - | stacked | carry_head=unset | 1 | 60.00 |" in lines


def test_a_damaged_record_is_one_line_naming_the_file(tmp_path, capsys):
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5})
    (write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.9}) / "run.json").write_text(
        '{"status": "COMPL'
    )
    (write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 3, {300: 0.9}) / "config.json").unlink()
    (
        write_run(tmp_path, 4, "mnistrotated", "groupwtacnn", 4, {300: 0.9}) / "result.json"
    ).write_text('{"budgets": {"300": {"stacked": {}}}}')
    (tmp_path / "mnistrotated" / "5").mkdir()  # a folder sacred had only begun to write
    (tmp_path / "mnistrotated" / "5" / "config.json").write_text("{}")
    assert main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| groupwtacnn | - | stacked | - | 1 | 50.00 |" in out  # the good run still counts
    run = tmp_path / "mnistrotated"
    said = [line for line in err.splitlines() if line.startswith("not counted")]
    assert said == [
        f"not counted: {run / '2'}: unreadable record: run.json (not valid JSON at line 1, "
        "column 12)",
        f"not counted: {run / '3'}: unreadable record: config.json (missing)",
        f"not counted: {run / '4'}: unreadable record: result.json (no test accuracy per label "
        "budget)",
        f"not counted: {run / '5'}: unreadable record: run.json (missing)",
    ]
    assert "Traceback" not in err
    assert f"| {run / '3'} | unreadable record: config.json (missing) |" in out


def test_stacked_is_listed_before_end_to_end(tmp_path, capsys):
    write_run(tmp_path, 1, "mnistrotated", "randominitcnn", 1, {300: 0.1})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 1, {300: 0.5})
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 1, {300: 0.5}, spatial=False)
    assert main([str(tmp_path)]) == 0
    lines = table_lines(capsys.readouterr().out)
    assert [line.split(" | ")[:3] for line in lines[1:]] == [
        ["| groupwtacnn", "-", "stacked"],
        ["| groupwtacnn", "-", "end-to-end"],
        ["| groupwtacnn", "nospatial", "stacked"],
        ["| groupwtacnn", "nospatial", "end-to-end"],
        ["| randominitcnn", "-", "stacked"],
        ["| randominitcnn", "-", "end-to-end"],
    ]
    classifiers = [r["classifier"] for r in csv.DictReader(open(tmp_path / "report.csv"))]
    assert classifiers == ["stacked", "end-to-end"] * 3


@pytest.mark.parametrize(
    "dataset, label",
    [
        ("mnistrotated", "labeled training videos"),
        ("cifar10scanned", "labeled training videos"),
        ("videos", "labeled training videos"),
        ("coil100", "training frames per object (COIL-100)"),
        ("necanimal", "training frames per object (COIL-100)"),
    ],
)
def test_the_plot_axis_names_what_a_label_is(dataset, label):
    assert x_label(dataset) == label


def test_the_plot_shows_test_accuracy_in_percent(tmp_path, monkeypatch):
    figures = {}

    def keep(fig, path):  # instead of writing the PNG: what the figure shows
        ax = fig.axes[0]
        lines = [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines]
        figures[os.path.basename(path)] = (ax.get_xlabel(), ax.get_ylabel(), lines)

    monkeypatch.setattr(plots, "_save", keep)
    write_run(tmp_path, 1, "coil100", "groupwtacnn", 1, {16: 0.7, 4: 0.5})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 1, {300: 0.25})
    write_report(tmp_path)
    xlabel, ylabel, lines = figures["accuracy_coil100.png"]
    assert (xlabel, ylabel) == ("training frames per object (COIL-100)", "test accuracy (%)")
    assert lines == [
        ("groupwtacnn stacked", [4, 16], [pytest.approx(50.0), pytest.approx(70.0)]),
        ("groupwtacnn end-to-end", [4, 16], [pytest.approx(50.0), pytest.approx(70.0)]),
    ]
    xlabel, _, lines = figures["accuracy_mnistrotated.png"]
    assert xlabel == "labeled training videos" and lines[0][2] == [pytest.approx(25.0)]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_outputs_are_written_whole_with_the_umask_mode(tmp_path, umask, mode):
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5})
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        write_report(tmp_path, out)
    finally:
        os.umask(old)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy_mnistrotated.png", "report.csv", "report.md"]  # no temporary file
    for name in names:
        assert stat.S_IMODE((out / name).stat().st_mode) == mode, name
    assert (out / "accuracy_mnistrotated.png").read_bytes()[:4] == b"\x89PNG"


def test_report_on_an_empty_folder_says_what_is_missing(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no finished label budget" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path)
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5}, status="FAILED")
    assert main([str(tmp_path)]) == 2  # nothing completed: no table
    err = capsys.readouterr().err
    assert "FAILED" in err and "no finished label budget" in err


def test_what_only_differs_between_methods_is_no_setting(tmp_path):
    # clipnorm follows the method (1 for the CRNN, 0 for the CNN): not a split of either row
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5}, clipnorm=0.0)
    write_run(tmp_path, 2, "mnistrotated", "groupwtacrnn", 1, {300: 0.6}, clipnorm=1.0)
    write_run(tmp_path, 3, "mnistrotated", "groupwtacrnn", 2, {300: 0.7}, clipnorm=0.5)
    rows = table(read_runs(tmp_path)[0])
    assert ("mnistrotated", "groupwtacnn", "", (), "stacked") in rows
    crnn = {key[3] for key in rows if key[1] == "groupwtacrnn"}
    assert crnn == {(("clipnorm", "0.5"),), (("clipnorm", "1.0"),)}  # a real difference


def add_probes(folder, accs, *, stages=True):
    """Give the run in `folder` probes (`accs`: budget -> (linear, k-NN) test accuracy)."""
    result = json.loads((folder / "result.json").read_text())
    for n, (linear, knn) in accs.items():
        budget = result["budgets"].setdefault(str(n), {})
        if not stages:
            budget.pop("stacked", None)
            budget.pop("finetune", None)
        budget["probe"] = {
            "linear": {"accuracy": linear, "loss": 1.0, "C": 0.1, "val_accuracy": linear},
            "knn": {"accuracy": knn, "k": 20},
        }
    (folder / "result.json").write_text(json.dumps(result))


def test_probes_are_rows_beside_the_stages_and_pixels_is_a_method(tmp_path, capsys, monkeypatch):
    # an old run (no `probe` key), a new one (probe=True) and one with probe=False: one row
    old = write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5})
    add_probes(old, {300: (0.6, 0.4)})
    new = write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.7}, probe=True)
    add_probes(new, {300: (0.8, 0.6)})
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 3, {300: 0.9}, probe=False)
    pixels = write_run(tmp_path, 4, "mnistrotated", "pixels", 1, {300: 0.0})
    add_probes(pixels, {300: (0.3, 0.2)}, stages=False)
    rows = table(read_runs(tmp_path)[0])
    assert list(rows) == [
        ("mnistrotated", "groupwtacnn", "", (), "stacked"),
        ("mnistrotated", "groupwtacnn", "", (), "end-to-end"),
        ("mnistrotated", "groupwtacnn", "", (), "linear probe"),
        ("mnistrotated", "groupwtacnn", "", (), "k-NN"),
        ("mnistrotated", "pixels", "", (), "linear probe"),
        ("mnistrotated", "pixels", "", (), "k-NN"),
    ]
    assert rows[("mnistrotated", "groupwtacnn", "", (), "stacked")].seeds == 3
    assert rows[("mnistrotated", "groupwtacnn", "", (), "k-NN")].accuracies == {300: [0.4, 0.6]}

    lines = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: lines.extend(fig.axes[0].lines))
    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "| groupwtacnn | - | linear probe | - | 2 | 70.00 ± 10.00 |" in md
    assert "| pixels | - | k-NN | - | 1 | 20.00 |" in md
    listed = [(r["method"], r["classifier"]) for r in csv.DictReader(open(tmp_path / "report.csv"))]
    assert ("groupwtacnn", "k-NN") in listed and ("pixels", "linear probe") in listed
    assert "pixels k-NN" in [line.get_label() for line in lines]


def test_the_run_table_has_probe_columns_when_the_run_has_probes():
    budget = {s: {"test": {"accuracy": 0.5}} for s in ("stacked", "finetune")}
    result = {"pretrain": None, "budgets": {"300": budget}}
    plain = run_table(result, [300], "run")
    assert "linear probe" not in plain and "50.0" in plain
    budget["probe"] = {"linear": {"accuracy": 0.612}, "knn": {"accuracy": 0.55}}
    lines = run_table(result, [300, 600], "run").splitlines()
    assert lines[1].split() == ["labels", "stacked", "end-to-end", "linear", "probe", "k-NN"]
    assert lines[2].split() == ["300", "50.0", "50.0", "61.2", "55.0"] and len(lines) == 3
    pixels = {"pretrain": None, "budgets": {"300": {"probe": budget["probe"]}}}
    assert run_table(pixels, [300], "run").splitlines()[2].split() == [
        "300",
        "-",
        "-",
        "61.2",
        "55.0",
    ]
