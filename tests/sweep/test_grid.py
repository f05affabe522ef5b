"""The sweep's grid: cells, the words they give their scripts, bad input as one sentence."""

from __future__ import annotations

import pytest

from gksparse.model.methods import METHODS
from gksparse.sweep import grid


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
