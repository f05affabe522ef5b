"""The results table from run folders."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from scipy import stats

from gksparse.evaluation.statistics import holm
from gksparse.protocol import plots
from gksparse.protocol.tables import run_table
from gksparse.report import main, read_runs, table, write_report, x_label

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
    # where it differs from the row's seeds (the 600 budget of one of two seeds); the std is
    # the sample std, followed by the 95% confidence interval of the mean
    write_run(tmp_path, 1, "mnistrotated", "groupwtacnn", 1, {300: 0.5, 600: 0.7})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 2, {300: 0.7})
    write_run(tmp_path, 3, "mnistrotated", "groupwtacnn", 1, {300: 0.9}, spatial=False)
    rows = table(read_runs(tmp_path)[0])
    assert rows[("mnistrotated", "groupwtacnn", "", (), "stacked")].accuracies[300] == [0.5, 0.7]
    nospatial = rows[("mnistrotated", "groupwtacnn", "nospatial", (), "end-to-end")]
    assert nospatial.accuracies == {300: [0.9]} and nospatial.seeds == 1

    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    two = "60.00 ± 14.14 [-67.06, 187.06]"  # t(0.975, 1) = 12.71 times std / sqrt(2) = 10
    assert f"| groupwtacnn | - | stacked | - | 2 | {two} | 70.00 (1) |" in md
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
    assert f"| groupwtacnn | - | stacked | {small} | 2 | 70.00 ± 14.14 [-57.06, 197.06] |" in lines
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
        '| groupwtacnn | - | stacked | opts={"a": 1, "b": 2} | 2 | 60.00 ± 14.14 [-67.06, 187.06] '
        "| 70.00 (1) |" in lines
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


def panels_of(fig):
    """What each panel (axes) of a figure shows: title -> (x label, y label, lines, bands,
    the 95% bars as (x, low, high) segments)."""
    return {
        ax.get_title(): (
            ax.get_xlabel(),
            ax.get_ylabel(),
            [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines],
            sum(isinstance(c, PolyCollection) for c in ax.collections),
            [
                (seg[0][0], seg[0][1], seg[1][1])
                for c in ax.collections
                if isinstance(c, LineCollection)
                for seg in c.get_segments()
            ],
        )
        for ax in fig.axes
    }


def test_the_plot_shows_test_accuracy_in_percent(tmp_path, monkeypatch):
    # updated: a panel per classifier, a line per row named without its classifier
    figures = {}

    def keep(fig, path):  # instead of writing the PNG: what the figure shows
        figures[os.path.basename(path)] = panels_of(fig)

    monkeypatch.setattr(plots, "_save", keep)
    write_run(tmp_path, 1, "coil100", "groupwtacnn", 1, {16: 0.7, 4: 0.5})
    write_run(tmp_path, 2, "mnistrotated", "groupwtacnn", 1, {300: 0.25})
    write_report(tmp_path)
    coil = figures["accuracy_coil100.png"]
    assert list(coil) == ["stacked", "end-to-end"]
    for xlabel, ylabel, lines, bands, bars in coil.values():
        assert (xlabel, ylabel) == ("training frames per object (COIL-100)", "test accuracy (%)")
        assert lines == [("groupwtacnn", [4, 16], [pytest.approx(50.0), pytest.approx(70.0)])]
        assert bands == 0 and bars == []  # one seed: no interval
    xlabel, _, lines, _, _ = figures["accuracy_mnistrotated.png"]["stacked"]
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
    # no temporary file
    assert names == ["accuracy_mnistrotated.png", "comparisons.csv", "report.csv", "report.md"]
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

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(panels_of(fig)))
    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "| groupwtacnn | - | linear probe | - | 2 | 70.00 ± 14.14 [-57.06, 197.06] |" in md
    assert "| pixels | - | k-NN | - | 1 | 20.00 |" in md
    listed = [(r["method"], r["classifier"]) for r in csv.DictReader(open(tmp_path / "report.csv"))]
    assert ("groupwtacnn", "k-NN") in listed and ("pixels", "linear probe") in listed
    [panels] = figures
    assert list(panels) == ["stacked", "end-to-end", "linear probe", "k-NN"]
    assert [line[0] for line in panels["k-NN"][2]] == ["groupwtacnn", "pixels"]
    assert [line[0] for line in panels["stacked"][2]] == ["groupwtacnn"]


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


def test_report_imports_no_torch():
    code = "import sys, gksparse.report; assert not any(m.startswith('torch') for m in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cells_carry_scipys_interval_and_a_failed_run_does_not_count(tmp_path, capsys):
    accs = [0.61, 0.64, 0.70]
    for seed, accuracy in enumerate(accs, 1):
        write_run(tmp_path, seed, "mnistrotated", "groupwtacnn", seed, {300: accuracy})
    write_run(tmp_path, 4, "mnistrotated", "groupwtacnn", 4, {300: 0.05}, status="FAILED")
    write_run(tmp_path, 5, "mnistrotated", "groupwtacnn", 1, {300: 0.66}, spatial=False)
    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    mean, std = np.mean(accs), np.std(accs, ddof=1)
    low, high = stats.t.interval(0.95, len(accs) - 1, loc=mean, scale=stats.sem(accs))
    cell = f"{100 * mean:.2f} ± {100 * std:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
    assert f"| groupwtacnn | - | stacked | - | 3 | {cell} |" in md
    assert "| groupwtacnn | nospatial | stacked | - | 1 | 66.00 |" in md
    with open(tmp_path / "report.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == [
        *("dataset", "method", "ablation", "classifier", "n", "mean", "std", "runs"),
        *("setting", "seeds", "ci95_low", "ci95_high"),
    ]
    cells = {(r["ablation"], r["classifier"]): r for r in lines}
    full = cells["", "stacked"]
    numbers = [float(full[k]) for k in ("mean", "std", "ci95_low", "ci95_high")]
    assert numbers == pytest.approx([mean, std, low, high], abs=1e-6)
    assert (full["runs"], full["seeds"]) == ("3", "3")
    one = cells["nospatial", "stacked"]
    assert (one["mean"], one["std"], one["ci95_low"], one["ci95_high"]) == ("0.660000", "", "", "")


def comparisons_of(folder):
    """comparisons.csv: its header and its lines by (labels, classifier, a, b)."""
    with open(folder / "comparisons.csv", newline="") as f:
        header = next(csv.reader(f))
        f.seek(0)
        lines = list(csv.DictReader(f))
    return header, {(int(r["labels"]), r["classifier"], r["a"], r["b"]): r for r in lines}


def test_comparisons_are_scipys_paired_t_test_on_the_shared_seeds(tmp_path, capsys):
    accs = {  # row -> seed -> test accuracy at 300 labels
        "groupwtacnn": {1: 0.62, 2: 0.66, 3: 0.71, 4: 0.64},
        "randominitcnn": {2: 0.30, 3: 0.41, 4: 0.33, 5: 0.36},
        "wtacnn": {1: 0.60, 2: 0.67, 3: 0.69},
    }
    folder = 0
    for method, by_seed in accs.items():
        for seed, accuracy in by_seed.items():
            folder += 1
            write_run(tmp_path, folder, "mnistrotated", method, seed, {300: accuracy})
    # seed 1 would pair with groupwtacnn's and wtacnn's seed 1, were a failed run to count
    write_run(tmp_path, 20, "mnistrotated", "randominitcnn", 1, {300: 0.95}, status="FAILED")
    write_run(tmp_path, 21, "mnistrotated", "groupwtacnn", 1, {300: 0.6}, spatial=False)
    assert main([str(tmp_path)]) == 0
    md = capsys.readouterr().out
    header, found = comparisons_of(tmp_path)
    assert header == [
        *("dataset", "labels", "classifier", "a", "b", "n", "difference"),
        *("ci95_low", "ci95_high", "p", "p_holm", "verdict"),
    ]
    pairs = [("groupwtacnn", "randominitcnn"), ("wtacnn", "randominitcnn")]
    pairs += [("groupwtacnn", "wtacnn")]  # (a) then (b), then (c) without numbers:
    single = ("groupwtacnn nospatial", "groupwtacnn")
    stages = ("stacked", "end-to-end")
    assert list(found) == [(300, c, a, b) for c in stages for a, b in [*pairs, single]]
    expected = {}
    for a, b in pairs:
        shared = sorted(set(accs[a]) & set(accs[b]))
        x, y = [100 * accs[a][s] for s in shared], [100 * accs[b][s] for s in shared]
        test = stats.ttest_rel(x, y)
        ci = test.confidence_interval(0.95)
        expected[a, b] = (len(shared), np.mean(np.subtract(x, y)), ci.low, ci.high, test.pvalue)
    assert [n for n, *_ in expected.values()] == [3, 2, 3]
    adjusted = holm([p for *_, p in expected.values()])
    for classifier in stages:
        for ((a, b), (n, *numbers)), p_holm in zip(expected.items(), adjusted, strict=True):
            line = found[300, classifier, a, b]
            names = ("difference", "ci95_low", "ci95_high", "p", "p_holm")
            assert [float(line[k]) for k in names] == pytest.approx([*numbers, p_holm], rel=1e-5)
            says = "better" if numbers[0] > 0 else "worse"
            if p_holm >= 0.05:
                says = f"no difference detected with {n} seeds"
            assert (line["dataset"], line["n"], line["verdict"]) == ("mnistrotated", str(n), says)
        line = found[(300, classifier, *single)]
        assert (line["n"], line["verdict"]) == ("1", "fewer than 2 shared seeds")
        assert [line[k] for k in ("difference", "ci95_low", "ci95_high", "p", "p_holm")] == [""] * 5
    assert found[300, "stacked", "groupwtacnn", "randominitcnn"]["verdict"] == "better"
    n, difference, low, high, p = expected["groupwtacnn", "randominitcnn"]
    assert (
        f"- 300 labels, stacked: groupwtacnn - randominitcnn: {difference:+.2f} points "
        f"[{low:+.2f}, {high:+.2f}], p = {p:.3g}, p_holm = {adjusted[0]:.3g}, 3 seeds: better"
    ) in md.splitlines()
    assert "### mnistrotated: comparisons" in md


def test_the_rows_compared_are_the_issues(tmp_path):
    # (a) random encoders, (c) ablations, (d) pixels (probes only), (e) a setting: epochs
    # 3 and 10 of groupwtacnn; the other methods ran at epochs 3 only, the CRNNs with their
    # own clipnorm; vgg19 has no random encoder
    runs = [
        ("groupwtacnn", {"epochs": 3}),
        ("groupwtacnn", {"epochs": 10}),
        ("groupwtacnn", {"epochs": 3, "spatial": False}),
        ("groupwtacrnn", {"clipnorm": 1.0}),
        ("randominitcnn", {}),
        ("randominitcrnn", {"clipnorm": 1.0}),
        ("vgg19", {}),
        ("pixels", {}),
    ]
    folder = 0
    for method, config in runs:
        for seed in (1, 2):
            folder += 1
            accuracy = 0.1 * seed + 0.01 * folder
            accs = {300: accuracy}
            run = write_run(tmp_path, folder, "mnistrotated", method, seed, accs, **config)
            add_probes(run, {300: (accuracy, accuracy / 2)}, stages=method != "pixels")
    write_report(tmp_path)
    _, found = comparisons_of(tmp_path)
    g3, g10 = "groupwtacnn epochs=3", "groupwtacnn epochs=10"
    nospatial = "groupwtacnn nospatial epochs=3"
    stages = [  # in the order of the module's list, then of the rows
        (g3, "randominitcnn"),
        ("groupwtacrnn", "randominitcrnn"),
        (nospatial, g3),
    ]
    encoders = [g3, nospatial, "groupwtacrnn", "randominitcnn", "randominitcrnn", "vgg19"]
    probes = [*stages, *[(a, "pixels") for a in encoders]]
    last = [(g10, g3)]
    assert list(found) == [
        *[(300, "stacked", a, b) for a, b in stages + last],
        *[(300, "end-to-end", a, b) for a, b in stages + last],
        *[(300, "linear probe", a, b) for a, b in probes + last],
        *[(300, "k-NN", a, b) for a, b in probes + last],
    ]
    assert all(line["n"] == "2" for line in found.values())


def test_the_plot_has_a_panel_per_classifier_with_bands_where_rows_have_seeds(
    tmp_path, monkeypatch
):
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.update(panels_of(fig)))
    for seed in (1, 2, 3):
        run = write_run(tmp_path, seed, "mnistrotated", "groupwtacnn", seed, {300: 0.5 + seed / 20})
        add_probes(run, {300: (0.6 + seed / 50, 0.5 - seed / 50)})
    write_run(tmp_path, 4, "mnistrotated", "randominitcnn", 1, {300: 0.3, 600: 0.4})
    write_report(tmp_path)
    assert list(figures) == ["stacked", "end-to-end", "linear probe", "k-NN"]
    stacked = [50 + 5 * seed for seed in (1, 2, 3)]  # groupwtacnn's accuracies in %
    half = stats.t.ppf(0.975, 2) * np.std(stacked, ddof=1) / np.sqrt(3)
    for classifier, (_, _, lines, bands, bars) in figures.items():
        rows = [line[0] for line in lines]
        probe = classifier in ("linear probe", "k-NN")
        assert rows == (["groupwtacnn"] if probe else ["groupwtacnn", "randominitcnn"])
        assert bands == 1  # groupwtacnn's 3 seeds; randominitcnn's one seed has none
        # one budget: the band has no width there, the bar shows the interval
        # (beside the other row's points at 300: the rows' points are a few % apart)
        assert len(bars) == 1 and bars[0][0] == pytest.approx(300, rel=0.05)
        assert probe or lines[0][1][0] < 300 < lines[1][1][0]
        if classifier == "stacked":
            assert bars[0][1:] == pytest.approx((60 - half, 60 + half))
