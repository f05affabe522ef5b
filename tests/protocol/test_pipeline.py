"""The protocol on a tiny synthetic dataset: result structure, files, resume, feature cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fakes import add_dataset

import gksparse.data as datasets
import gksparse.protocol.config as config_module
from gksparse.data.containers import VideoData, Videos
from gksparse.model.checkpoint import load_checkpoint
from gksparse.protocol.pipeline import Protocol, ProtocolConfig, run_protocol


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
    add_dataset(monkeypatch, "tiny")
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
        "n60.probe.features_seconds",  # the linear and k-NN probes (probe=True)
        "n60.probe.linear.seconds",
        "n60.probe.knn.seconds",
        "n60.probe.seconds",
    }
    assert all(value > 0 for value in seconds.values())


@pytest.mark.parametrize("method", ["randominitcnn", "randominitcrnn"])
def test_method_without_pretraining_reports_its_random_decoder(tiny, tmp_path, method):
    # As the reference: no training, but the reconstruction losses and pictures of the
    # random decoder, and the random initial weights saved (the same for the same seed).
    result = run_protocol(config(method=method, num_labeled=[60]), tmp_path / "a")
    pre = result["pretrain"]
    assert pre["pretrained"] is False and "history" not in pre
    assert pre["train_loss"] > 0 and pre["test_loss"] > 0
    for name in ("reconstructions.png", "decoder_filters.png"):
        assert (tmp_path / "a" / name).is_file()
    again = Protocol(config(method=method, num_labeled=[]), tmp_path / "b")
    pre_data, cls = again.load_data()
    again.pretrain(pre_data, cls, again.model_config(pre_data, cls))
    a, _ = load_checkpoint(tmp_path / "a" / "pretrained.pt")
    b, _ = load_checkpoint(tmp_path / "b" / "pretrained.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert a.decoder.weight.abs().sum() > 0 and "60" in result["budgets"]


def test_finished_stages_are_not_redone(tiny, tmp_path, monkeypatch):
    run_protocol(config(num_labeled=[60]), tmp_path)
    mtime = (tmp_path / "pretrained.pt").stat().st_mtime_ns
    calls = []
    import gksparse.protocol.pipeline as protocol

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
        p.pretrain(pre, cls, p.model_config(pre, cls))
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
    model = p.pretrain(pre, cls, p.model_config(pre, cls))
    train, val, _ = cls.labeled_split(60, np.random.default_rng(0))
    assert not p.can_cache_features(train, val, model)


def test_ablations_set_k_to_everything(tiny, tmp_path):
    p = Protocol(config(spatial=False, lifetime=False), tmp_path)
    pre, cls = p.load_data()
    mc = p.model_config(pre, cls)
    assert mc.k_spatial == 8 * 8 and mc.k_lifetime == 10 * 4
    mc = Protocol(config(), tmp_path / "b").model_config(pre, cls)
    assert (mc.k_spatial, mc.k_lifetime) == (1, 1)


# -- the reference's training rules (METHOD.md 5.1, 5.2) --------------------------------------
def spy_on_fit(monkeypatch) -> list[dict]:
    """Record, for every `fit` of the protocol: the stage, its loss, the head's dense weight
    and whether its optimizer already has a state, all at the start of the stage."""
    import gksparse.protocol.pipeline as protocol

    calls, real = [], protocol.fit

    def spy(model, stage, *args, optimizer=None, **kw):
        calls.append(
            {
                "stage": stage.name,
                "loss": stage.loss,
                "clipnorm": stage.clipnorm,
                "optimizer": stage.optimizer,
                "head": model.head.dense.weight.detach().clone(),
                "state": bool(optimizer is not None and optimizer.state_dict()["state"]),
            }
        )
        return real(model, stage, *args, optimizer=optimizer, **kw)

    monkeypatch.setattr(protocol, "fit", spy)
    return calls


@pytest.mark.parametrize("carry", [True, False])
def test_the_head_carries_over_between_budgets_or_starts_fresh(tiny, tmp_path, monkeypatch, carry):
    calls = spy_on_fit(monkeypatch)
    run_protocol(config(num_labeled=[30, 60], carry_head=carry), tmp_path)
    assert [c["stage"] for c in calls] == ["pretrain", "stacked", "finetune"] * 1 + [
        "stacked",
        "finetune",
    ]
    pretrained = load_checkpoint(tmp_path / "pretrained.pt")[0].head.dense.weight
    after_first = load_checkpoint(tmp_path / "finetune_n30.pt")[0].head.dense.weight
    assert not torch.equal(pretrained, after_first)  # the first budget trained the head
    second = calls[3]  # the stacked stage of budget 60
    assert torch.equal(calls[1]["head"], pretrained)  # the first budget starts pretrained
    if carry:  # the reference on Rotated MNIST and Scanned CIFAR-10
        assert torch.equal(second["head"], after_first)
        assert second["state"] and calls[4]["state"]  # both optimizers continue
    else:
        assert torch.equal(second["head"], pretrained)
        assert not second["state"] and not calls[4]["state"]


@pytest.mark.parametrize("carry", [True, False])
def test_a_run_killed_between_budgets_resumes_to_the_same_result(tiny, tmp_path, carry):
    cfg = config(num_labeled=[30, 60], carry_head=carry, epochs=2)
    expected = run_protocol(cfg, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill_in_second_budget(name, value, step):
        if name.startswith("n60.stacked"):
            raise Killed

    with pytest.raises(Killed):
        run_protocol(cfg, tmp_path / "cut", kill_in_second_budget)
    assert set(json.loads((tmp_path / "cut" / "result.json").read_text())["budgets"]) == {"30"}
    resumed = run_protocol(cfg, tmp_path / "cut")
    for n in ("30", "60"):
        for stage in ("stacked", "finetune"):
            for split in ("train", "val", "test"):
                got, want = (r["budgets"][n][stage][split] for r in (resumed, expected))
                assert got["accuracy"] == want["accuracy"]
                assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_default_rules_keras_adam_global_clip_unweighted(tiny, tmp_path, monkeypatch):
    calls = spy_on_fit(monkeypatch)
    run_protocol(config(method="groupwtacrnn", epochs=1), tmp_path / "rnn")
    assert [c["optimizer"] for c in calls] == ["adam", "adam", "sgd"]  # Keras' Adam
    assert [c["clipnorm"] for c in calls] == [1.0, 1.0, 1.0]  # all three stages
    assert all(getattr(c["loss"], "weights", None) is None for c in calls[1:])  # unweighted
    calls.clear()
    run_protocol(
        config(epochs=1, class_weight="balanced", adam="torch", clipnorm=0.5), tmp_path / "alt"
    )
    assert [c["optimizer"] for c in calls] == ["torch_adam", "torch_adam", "sgd"]
    assert [c["clipnorm"] for c in calls] == [0.5, 0.5, 0.5]
    weights = calls[1]["loss"].weights
    assert weights is not None and torch.allclose(weights, torch.ones(3), atol=0.2)
    calls.clear()
    run_protocol(config(method="denoisingcrnn", epochs=1), tmp_path / "den")
    assert [c["clipnorm"] for c in calls] == [0.0, 0.0, 0.0]  # the reference never clipped it


@pytest.mark.parametrize(
    ("method", "zca", "want"),
    [("groupwtacnn", None, None), ("vgg19", None, False), ("vgg19", True, True)],
)
def test_vgg19_gets_unwhitened_frames(method, zca, want, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(datasets, "load", lambda name, **kw: seen.append(kw) or tiny_data())
    add_dataset(monkeypatch, "tiny")
    Protocol(config(method=method, zca=zca), tmp_path).load_data()
    assert seen[0]["zca"] is want  # None: the dataset's own choice


def test_pictures_show_training_and_test_videos(tiny, tmp_path, monkeypatch):
    import gksparse.protocol.plots as plots

    seen = {}
    real = plots.save_reconstructions
    monkeypatch.setattr(
        plots, "save_reconstructions", lambda *a, **k: seen.update(k) or real(*a, **k)
    )
    run_protocol(config(num_labeled=[], pictures=2), tmp_path)
    assert seen["labels"] == ["train", "train", "test", "test"]
    assert (tmp_path / "reconstructions.png").is_file()


def test_transfer_runs_report_the_loss_on_the_classification_videos(tmp_path, monkeypatch):
    # NEC Animal: pretrained on its own videos, classified on COIL-100, whose reconstruction
    # loss the reference reported as its 'test' loss.
    other = tiny_data(seed=5)
    other.name = "tiny2"
    monkeypatch.setattr(
        datasets, "load", lambda name, **kw: other if name == "tiny2" else tiny_data()
    )
    add_dataset(monkeypatch, "tiny")
    add_dataset(monkeypatch, "tiny2", ("random", 90, 3))
    result = run_protocol(config(classify_dataset="tiny2", num_labeled=[60]), tmp_path)
    pre = result["pretrain"]
    assert pre["tiny2_loss"] > 0 and pre["tiny2_loss"] != pre["train_loss"]


def test_damaged_records_are_one_sentence_naming_the_file(tiny, tmp_path):
    cfg = config(epochs=3)

    class Killed(Exception):
        pass

    def kill(name, value, step):
        if name == "pretrain.loss" and step == 2:  # epoch 1's state is saved
            raise Killed

    with pytest.raises(Killed):
        run_protocol(cfg, tmp_path, kill)
    state = tmp_path / "pretrain_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    with pytest.raises(RuntimeError, match=f"the pretraining state {state} is damaged"):
        run_protocol(cfg, tmp_path)
    state.unlink()
    (tmp_path / "result.json").write_text('{"pretrain": nu')
    with pytest.raises(RuntimeError, match="result.json is damaged .*delete it and resume"):
        run_protocol(cfg, tmp_path)


def test_budgets_of_a_folder_of_videos_are_checked_before_pretraining(tmp_path, monkeypatch):
    import gksparse.protocol.pipeline as protocol

    monkeypatch.setattr(datasets, "load", lambda name, **kw: tiny_data())
    add_dataset(monkeypatch, "tiny")
    monkeypatch.setattr(protocol, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(config_module.ConfigError, match="use budgets from 23 to 81"):
        run_protocol(config(num_labeled=[60, 85]), tmp_path)
