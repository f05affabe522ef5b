"""The protocol on a tiny synthetic dataset: result structure, files, resume, feature cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gksparse.data as datasets
from gksparse.checkpoint import load_checkpoint
from gksparse.data.videos import VideoData, Videos
from gksparse.protocol import Protocol, ProtocolConfig, run_protocol


def tiny_data(seed: int = 0, n: int = 90, t: int = 4, classes: int = 3) -> VideoData:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    # Class-dependent brightness, so a classifier has something to learn.
    videos = rng.random((n, t, 1, 8, 8), dtype=np.float32) * (0.3 + 0.3 * labels)[
        :, None, None, None, None
    ].astype(np.float32)
    train = Videos(videos, labels.astype(np.int64))
    test = Videos(videos[:30].copy(), labels[:30].astype(np.int64))
    return VideoData(train, test, classes, name="tiny")


@pytest.fixture
def tiny(monkeypatch):
    data = tiny_data()
    monkeypatch.setattr(datasets, "load", lambda name, **kw: data)
    return data


def config(**kw) -> ProtocolConfig:
    base = dict(
        dataset="tiny",
        method="groupwtacnn",
        seed=3,
        num_labeled=[60],
        batch_size=10,
        filters=8,
        enc_kernel=3,
        dec_kernel=5,
        groups=2,
        epochs=3,
        patience=2,
        device="cpu",
        progress=False,
        pictures=2,
    )
    return ProtocolConfig(**{**base, **kw})


def test_result_structure_and_files(tiny, tmp_path):
    logged = []
    result = run_protocol(config(), tmp_path, lambda *a: logged.append(a))
    assert set(result) == {"pretrain", "budgets"}
    pre = result["pretrain"]
    assert pre["pretrained"] and pre["epochs"] == 3 and len(pre["history"]) == 3
    assert pre["train_loss"] > 0 and pre["test_loss"] > 0
    budget = result["budgets"]["60"]
    assert (budget["n_train"], budget["n_val"], budget["n_test"]) == (60, 7, 30)
    for stage in ("stacked", "finetune"):
        for split in ("train", "val", "test"):
            assert set(budget[stage][split]) == {"loss", "accuracy"}
            assert 0 <= budget[stage][split]["accuracy"] <= 1
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for name in (
        "pretrained.pt",
        "stacked_n60.pt",
        "finetune_n60.pt",
        "reconstructions.png",
        "decoder_filters.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "pretrain_state.pt").exists()  # removed once pretraining is done
    names = {name for name, _, _ in logged}
    assert {
        "pretrain.loss",
        "pretrain.test_loss",
        "n60.stacked.loss",
        "n60.stacked.val_loss",
        "n60.finetune.test_accuracy",
    } <= names
    seconds = {name: value for name, value, _ in logged if name.endswith("seconds")}
    assert set(seconds) == {
        "pretrain.seconds",  # the last epoch's
        "pretrain.evaluate_seconds",
        "n60.stacked.features_seconds",
        "n60.stacked.seconds",
        "n60.stacked.evaluate_seconds",
        "n60.finetune.seconds",
        "n60.finetune.evaluate_seconds",
    }
    assert all(value > 0 for value in seconds.values())


def test_method_without_pretraining_saves_its_initial_weights(tiny, tmp_path):
    result = run_protocol(config(method="randominitcnn", num_labeled=[60]), tmp_path)
    assert result["pretrain"] == {"pretrained": False}
    model, _ = load_checkpoint(tmp_path / "pretrained.pt")
    torch.manual_seed(0)
    assert model.decoder is None and "60" in result["budgets"]


def test_finished_stages_are_not_redone(tiny, tmp_path, monkeypatch):
    run_protocol(config(num_labeled=[60]), tmp_path)
    mtime = (tmp_path / "pretrained.pt").stat().st_mtime_ns
    calls = []
    import gksparse.protocol as protocol

    real_fit = protocol.fit
    monkeypatch.setattr(
        protocol, "fit", lambda *a, **k: calls.append(a[1].name) or real_fit(*a, **k)
    )
    result = run_protocol(config(num_labeled=[60, 30]), tmp_path)
    assert calls == ["stacked", "finetune"]  # only the new budget trains
    assert (tmp_path / "pretrained.pt").stat().st_mtime_ns == mtime
    assert set(result["budgets"]) == {"60", "30"}


def test_interrupted_pretraining_resumes_to_the_same_result(tiny, tmp_path):
    cfg = config(epochs=4, num_labeled=[60])
    expected = run_protocol(cfg, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill_at_epoch_2(name, value, step):
        if name == "pretrain.loss" and step == 2:
            raise Killed

    with pytest.raises(Killed):
        run_protocol(cfg, tmp_path / "cut", kill_at_epoch_2)
    assert (tmp_path / "cut" / "pretrain_state.pt").is_file()
    assert not (tmp_path / "cut" / "pretrained.pt").exists()
    resumed = run_protocol(cfg, tmp_path / "cut")
    assert resumed["pretrain"]["history"][:1] == expected["pretrain"]["history"][:1]
    np.testing.assert_allclose(
        resumed["pretrain"]["history"], expected["pretrain"]["history"], rtol=1e-6
    )
    for stage in ("stacked", "finetune"):
        for split in ("train", "val", "test"):
            got, want = (r["budgets"]["60"][stage][split] for r in (resumed, expected))
            assert got["accuracy"] == want["accuracy"]
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_stacked_stage_on_cached_features_equals_running_the_encoder(tiny, tmp_path):
    results = {}
    for cache_gb in (0.0, 1.0):
        p = Protocol(config(feature_cache_gb=cache_gb), tmp_path / str(cache_gb))
        pre, cls = p.load_data()
        p.pretrain(pre, p.model_config(pre, cls))
        train, val, _ = cls.labeled_split(60, np.random.default_rng(0))
        model = load_checkpoint(tmp_path / str(cache_gb) / "pretrained.pt")[0]
        assert p.can_cache_features(train, val, model) == (cache_gb > 0)
        results[cache_gb] = (
            p.classify(cls, 60),
            load_checkpoint(tmp_path / str(cache_gb) / "stacked_n60.pt")[0],
        )
    (cached, m1), (plain, m0) = results[1.0], results[0.0]
    assert cached["stacked"]["epochs"] == plain["stacked"]["epochs"]
    for split in ("train", "val", "test"):
        assert cached["stacked"][split]["loss"] == pytest.approx(
            plain["stacked"][split]["loss"], rel=1e-4
        )
    for a, b in zip(m0.head.parameters(), m1.head.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_denoising_methods_do_not_cache_features(tiny, tmp_path):
    p = Protocol(config(method="denoisingcnn"), tmp_path)
    pre, cls = p.load_data()
    model = p.pretrain(pre, p.model_config(pre, cls))
    train, val, _ = cls.labeled_split(60, np.random.default_rng(0))
    assert not p.can_cache_features(train, val, model)


def test_ablations_set_k_to_everything(tiny, tmp_path):
    p = Protocol(config(spatial=False, lifetime=False), tmp_path)
    pre, cls = p.load_data()
    mc = p.model_config(pre, cls)
    assert mc.k_spatial == 8 * 8 and mc.k_lifetime == 10 * 4
    mc = Protocol(config(), tmp_path / "b").model_config(pre, cls)
    assert (mc.k_spatial, mc.k_lifetime) == (1, 1)
