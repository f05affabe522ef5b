"""The sweep's grid: cells, the words they give their scripts, bad input as one sentence."""

from __future__ import annotations

import pytest

from gksparse.model.methods import METHODS
from gksparse.sweep import grid
from gksparse.sweep.__main__ import main as sweep_main


def test_cells_cross_the_axes_and_ablate_only_methods_with_sparsity():
    cells = grid.cells(
        ["mnistrotated"], ["groupwtacnn", "randominitcnn"], ["none", "nospatial"], [1, 2]
    )
    names = [c.name for c in cells]
    assert names == [
        "mnistrotated-groupwtacnn-none-seed1",
        "mnistrotated-groupwtacnn-none-seed2",
        "mnistrotated-groupwtacnn-nospatial-seed1",
        "mnistrotated-groupwtacnn-nospatial-seed2",
        "mnistrotated-randominitcnn-none-seed1",
        "mnistrotated-randominitcnn-none-seed2",
    ]
    assert len(set(names)) == len(names)


def test_a_cell_gives_its_script_method_ablation_seed_then_the_sweeps_words():
    cell = grid.Cell("mnistrotated", "groupwtacrnn", "nolifetime", 3, ("small", "epochs=2"))
    assert cell.experiment_words() == ["groupwtacrnn", "nolifetime", "seed=3", "small", "epochs=2"]
    assert cell.label == "mnistrotated groupwtacrnn nolifetime seed=3"
    plain = grid.Cell("mnistrotated", "wtacnn", "none", 1)
    assert plain.experiment_words() == ["wtacnn", "seed=1"]


def test_has_ablations_follows_the_methods_table():
    for name, method in METHODS.items():
        assert grid.has_ablations(name) == (method.sparsity != "none")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: grid.parse_seeds("1,two"), "'two' is not a whole number"),
        (lambda: grid.parse_methods("groupwtacnn,nope"), "unknown method 'nope'"),
        (lambda: grid.parse_names("none,most", grid.ABLATIONS, "ablations"), "'most'"),
        (lambda: grid.cells(["mnist"], ["wtacnn"], ["none"], [1]), "unknown dataset 'mnist'"),
        (lambda: grid.cells(["coil100"], ["wtacnn"], ["none"], [1], ["seed=3"]), "--seeds"),
        (lambda: grid.cells(["coil100"], ["wtacnn"], ["none"], [1], ["nospatial"]), "--abl"),
        (lambda: grid.cells(["coil100"], ["vgg19"], ["nospatial"], [1]), "no cells"),
    ],
)
def test_bad_input_is_one_sentence(call, words):
    with pytest.raises(grid.GridError, match=words) as e:
        call()
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


def test_methods_all_leaves_out_what_lacks_its_extra(monkeypatch):
    real = grid.importlib.util.find_spec
    monkeypatch.setattr(
        grid.importlib.util, "find_spec", lambda name: None if name == "torchvision" else real(name)
    )
    said = []
    methods = grid.parse_methods("all", say=said.append)
    assert methods == [m for m in METHODS if m != "vgg19"]
    assert len(said) == 1 and "vgg19" in said[0] and "torchvision" in said[0]


def test_vary_multiplies_the_grid_seeds_of_one_setting_next_to_each_other():
    vary = grid.parse_vary(["epochs=30,3", "num_labeled=[300],[300,600]"])
    assert vary == [("epochs", ("30", "3")), ("num_labeled", ("[300]", "[300,600]"))]
    cells = grid.cells(["mnistrotated"], ["groupwtacnn"], ["none"], [1, 2], ["small"], vary)
    assert len(cells) == 2 * 2 * 2
    assert [c.name for c in cells[:3]] == [
        "mnistrotated-groupwtacnn-none-seed1-epochs=30-num_labeled=[300]",
        "mnistrotated-groupwtacnn-none-seed2-epochs=30-num_labeled=[300]",
        "mnistrotated-groupwtacnn-none-seed1-epochs=30-num_labeled=[300,600]",
    ]
    assert cells[-1].label == "mnistrotated groupwtacnn seed=2 epochs=3 num_labeled=[300,600]"
    assert len({c.name for c in cells}) == len(cells)
    # the same words as `with small epochs=3 num_labeled=[300,600]`
    assert cells[-1].experiment_words() == [
        "groupwtacnn",
        "seed=2",
        "small",
        "epochs=3",
        "num_labeled=[300,600]",
    ]


def test_without_vary_a_cell_keeps_its_name_and_label():
    (cell,) = grid.cells(["mnistrotated"], ["groupwtacnn"], ["nospatial"], [1], ["small"], [])
    assert cell == grid.Cell("mnistrotated", "groupwtacnn", "nospatial", 1, ("small",))
    assert cell.name == "mnistrotated-groupwtacnn-nospatial-seed1"
    assert cell.label == "mnistrotated groupwtacnn nospatial seed=1"
    varied = grid.Cell("mnistrotated", "groupwtacnn", "nospatial", 1, (), ("epochs=30",))
    assert varied.name == "mnistrotated-groupwtacnn-nospatial-seed1-epochs=30"
    assert varied.label == "mnistrotated groupwtacnn nospatial seed=1 epochs=30"


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("30,3", ["30", "3"]),
        ("[300],[300,600]", ["[300]", "[300,600]"]),
        ("[300], [300, 600]", ["[300]", "[300, 600]"]),
        ("'a,b',\"c,[d\",{'x': [1, 2]}", ["'a,b'", '"c,[d"', "{'x': [1, 2]}"]),
        ("0.1", ["0.1"]),
    ],
)
def test_values_split_on_the_commas_outside_brackets_and_quotes(text, values):
    assert grid.split_values(text) == values


@pytest.mark.parametrize("text", ["[300,600", "[300]]", "(1,2]", "'a,b"])
def test_unbalanced_values_are_one_sentence(text):
    with pytest.raises(grid.GridError) as e:
        grid.split_values(text)
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


def test_a_file_unsafe_value_gets_a_safe_unique_name():
    words = ["data=/a/b", "data=_a_b", "data=/a_b", "x=" + "9" * 100]
    names = [grid.file_safe(w) for w in words]
    assert len(set(names)) == len(names)
    assert all("/" not in n and len(n) <= 70 for n in names)
    assert grid.file_safe("num_labeled=[300,600]") == "num_labeled=[300,600]"


def _main_error(capsys, *argv: str) -> str:
    """The one sentence `python -m gksparse.sweep ... --dry-run` fails with (exit code 2)."""
    with pytest.raises(SystemExit) as e:
        sweep_main(["mnistrotated", "--methods", "groupwtacnn", "--dry-run", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith(".\n") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--vary", "epoch=30"], "unknown config key 'epoch'"),
        (["--vary", "epochs=3", "with", "small", "epochs=4"], "both by --vary and after 'with'"),
        (["--vary", "epochs="], "no values"),
        (["--vary", "epochs=,"], "no values"),
        (["--vary", "epochs=1,,2"], "empty value"),
        (["--vary", "epochs"], "is not KEY=V1,V2"),
        (["--vary", "seed=1,2"], "--seeds"),
        (["--vary", "method=wtacnn"], "--methods"),
        (["--vary", "dataset=coil100"], "arguments"),
        (["--vary", "device=cpu,cuda"], "does not change results"),
        (["--vary", "epochs=3", "--vary", "epochs=4"], "given twice"),
        (["--vary", "epochs=abc"], "epochs='abc' is not a valid setting"),
        (["--vary", "num_labeled=[300"], "unclosed bracket"),
        (["--vary", "lr=0.1,1e-1"], "have the same settings"),
    ],
)
def test_bad_vary_is_one_sentence_and_exit_2(tmp_path, capsys, argv, words):
    err = _main_error(capsys, "--results", str(tmp_path), *argv)
    assert words in err
    assert not list(tmp_path.iterdir())  # nothing ran


def test_dry_run_lists_the_varied_cells(tmp_path, capsys):
    argv = ["mnistrotated", "--methods", "groupwtacnn", "--seeds", "1,2", "--dry-run"]
    assert sweep_main([*argv, "--results", str(tmp_path), "--vary", "epochs=30,3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.endswith(": run")]
    assert lines == [
        f"mnistrotated groupwtacnn seed={s} epochs={e}: run" for e in (30, 3) for s in (1, 2)
    ]
