"""The one table of datasets: every part reads it, and a new dataset is its module (facts,
`locate`, `generate`), its preset and nothing else: proved with a tiny synthetic one."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from gksparse.data import catalog, load
from gksparse.data.facts import Facts
from gksparse.protocol import presets
from gksparse.protocol.config import ProtocolConfig, rules
from gksparse.protocol.pipeline import run_protocol
from gksparse.report import x_label
from gksparse.sweep import grid

FRAMES, SIZE, CLASSES, TRAIN, TEST = 4, 8, 2, 60, 20


def _generate(files: list[Path], writer, request) -> dict:
    """Bright squares moving right (class 0) or down (class 1) on a dark frame."""
    rng = np.random.default_rng(request.seed)
    for part, n in (
        ("train", request.size("train") or TRAIN),
        ("test", request.size("test") or TEST),
    ):
        labels = rng.integers(0, CLASSES, n)
        videos = writer.create(f"{part}_videos", (n, FRAMES, 1, SIZE, SIZE))
        for i, label in enumerate(labels):
            y, x = rng.integers(0, SIZE - 4, 2)
            for t in range(FRAMES):
                yy, xx = (y, min(x + t, SIZE - 2)) if label == 0 else (min(y + t, SIZE - 2), x)
                videos[i, t, 0, yy : yy + 2, xx : xx + 2] = 1
        writer.save(f"{part}_labels", labels.astype(np.int64))
    return {"num_classes": CLASSES, "split": "random"}


@pytest.fixture
def tinyshapes(monkeypatch) -> str:
    """The synthetic dataset added as a real one is: its module in the table, its preset."""
    module = types.ModuleType("tinyshapes")
    module.NAME, module.VERSION, module.SEEDED, module.WHITEN = "tinyshapes", 1, True, False
    module.FACTS = Facts(
        "tinyshapes",
        (1, SIZE, SIZE),
        FRAMES,
        CLASSES,
        "random",
        TRAIN,
        False,
        x_label="labeled shapes",
    )
    module.locate = lambda root, download=True, progress=True: []
    module.generate = _generate
    monkeypatch.setitem(catalog.MODULES, "tinyshapes", module)
    monkeypatch.setitem(catalog.CATALOG, "tinyshapes", module.FACTS)
    small = {"epochs": 1, "num_labeled": [20], "filters": 8, "groups": 2, "pictures": 0}
    paper = {"batch_size": 10, "enc_kernel": 3, "dec_kernel": 5, "epochs": 3}
    monkeypatch.setitem(presets.PRESETS, "tinyshapes", presets.Preset(paper, small, small))
    return "tinyshapes"


def test_every_part_reads_the_one_table():
    for name, facts in catalog.CATALOG.items():
        assert catalog.MODULES[name].FACTS is facts and facts.name == name
    assert catalog.classified("necanimal") == "coil100"
    assert x_label("necanimal") == x_label("coil100") != x_label("mnistrotated")
    assert rules("groupwtacnn", "coil100")["carry_head"] is False
    assert rules("groupwtacnn", "mnistrotated")["carry_head"] is True
    assert "videos" not in catalog.generated() and "mnistrotated" in catalog.generated()


def test_a_new_dataset_is_its_module_and_its_preset(tinyshapes, tmp_path):
    data = load(tinyshapes, tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    assert data.train.videos.shape == (TRAIN, FRAMES, 1, SIZE, SIZE) and data.num_classes == 2
    with pytest.raises(ValueError, match="num_labeled"):  # its labeled pool is 60 videos
        ProtocolConfig(dataset=tinyshapes, method="groupwtacnn", num_labeled=[100])
    assert {"small", "smoke", "groupwtacnn", "nospatial"} <= set(presets.named_configs(tinyshapes))
    cfg = ProtocolConfig(
        dataset=tinyshapes,
        method="groupwtacnn",
        data_dir=str(tmp_path / "data"),
        progress=False,
        probe=False,
        **{**presets.PRESETS[tinyshapes].paper, **presets.PRESETS[tinyshapes].small},
    )
    result = run_protocol(cfg, tmp_path / "run")
    assert 0 <= result["budgets"]["20"]["finetune"]["test"]["accuracy"] <= 1
    assert x_label(tinyshapes) == "labeled shapes"
    assert [c.dataset for c in grid.cells([tinyshapes], ["wtacnn"], ["none"], [1], [])] == [
        tinyshapes
    ]
