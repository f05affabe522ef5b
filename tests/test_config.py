"""ProtocolConfig's checks, the reference's rules it resolves, and what may change on resume."""

from __future__ import annotations

import pytest
import torch

from gksparse.config import ConfigError, ProtocolConfig, resume_conflicts, stage_of
from gksparse.data.splits import budget_range


def make(**kw) -> ProtocolConfig:
    return ProtocolConfig(**{"dataset": "mnistrotated", "method": "groupwtacnn", **kw})


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("epochs", "abc", "a whole number >= 1"),
        ("epochs", 0, "a whole number >= 1"),
        ("epochs", 2.5, "a whole number >= 1"),
        ("epochs", True, "a whole number >= 1"),
        ("batch_size", -3, "a whole number >= 1"),
        ("batch_size", 0, "a whole number >= 1"),
        ("eval_batch_size", 0, "a whole number >= 1"),
        ("filters", 0, "a whole number >= 1"),
        ("seed", "abc", "a whole number"),
        ("lr", "abc", "a number > 0"),
        ("lr", 0.0, "a number > 0"),
        ("finetune_lr", float("nan"), "a number > 0"),
        ("momentum", 1.0, "from 0 to below 1"),
        ("zca_epsilon", -1, "a number >= 0"),
        ("clipnorm", -1.0, "a number >= 0"),
        ("autocast", "maybe", "True or False"),
        ("spatial", 1, "True or False"),
        ("carry_head", "yes", "True or False"),
        ("class_weight", "auto", "none, balanced"),
        ("adam", "amsgrad", "keras, torch"),
        ("method", "cnn", "groupwtacnn"),
        ("dataset", "mnist", "mnistrotated"),
        ("enc_kernel", 4, "odd kernel"),
        ("groups", 5, "a divisor of filters=64"),
        ("patience", 0, "a whole number >= 1 (or None)"),
        ("num_labeled", 200, "a list of label budgets"),
        ("num_labeled", [300, 300], "each budget once"),
        ("num_labeled", [0], "use budgets from 86 to 54000"),
        ("num_labeled", [100000], "use budgets from 86 to 54000"),
        ("device", "tpu", "use cpu, cuda"),
    ],
)
def test_bad_settings_are_one_sentence_naming_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as e:
        make(**{key: value})
    message = str(e.value)
    assert message.startswith(f"{key}={value!r} is not a valid setting: ")
    assert allowed in message and "\n" not in message and message.endswith(".")


def test_budgets_follow_the_subset_and_the_dataset():
    with pytest.raises(ConfigError, match="use budgets from 86 to 2700"):
        make(train_size=3000, num_labeled=[2800])
    make(train_size=3000, num_labeled=[300, 2700])
    with pytest.raises(ConfigError, match="1 to 32 frames per object"):
        make(dataset="coil100", num_labeled=[64])
    make(dataset="necanimal", num_labeled=[2, 32])  # classified on COIL-100
    make(dataset="videos", num_labeled=[5])  # a folder: checked once it is read
    assert budget_range("random", 60000, 10) == (86, 54000)
    assert budget_range("random", 50, 10)[0] > budget_range("random", 50, 10)[1]  # none fits


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_cuda_without_cuda_says_how_to_get_it():
    with pytest.raises(ConfigError, match="use device=cpu") as e:
        make(device="cuda")
    assert "CPU-only build" in str(e.value) or "no CUDA GPU" in str(e.value)


def test_the_reference_rules_per_method_and_dataset():
    assert make(method="groupwtacrnn").clip == 1.0 and make().clip == 0.0
    assert make(method="denoisingcrnn").clip == 0.0  # the reference did not clip it
    assert make(method="groupwtacnn", clipnorm=2.0).clip == 2.0
    assert make().carries_head and make(dataset="cifar10scanned").carries_head
    assert not make(dataset="coil100", num_labeled=[4]).carries_head
    assert not make(dataset="necanimal", num_labeled=[4]).carries_head
    assert not make(carry_head=False).carries_head
    assert make(method="vgg19").whiten is False and make().whiten is None
    assert make(method="vgg19", zca=True).whiten is True
    cfg = make()
    assert (cfg.autocast, cfg.adam, cfg.class_weight, cfg.adam_optimizer) == (
        False,
        "keras",
        "none",
        "adam",
    )


SAVED = {
    "dataset": "mnistrotated",
    "method": "groupwtacnn",
    "seed": 1,
    "lr": 1e-4,
    "finetune_lr": 0.1,
    "num_labeled": [300, 600],
    "data_dir": "/a",
    "frames": 16,
    "carry_head": True,
}


def conflicts(started: bool, finished: list[int], **new) -> list[str]:
    return resume_conflicts(
        SAVED, {**SAVED, **new}, pretraining_started=started, finished_budgets=finished
    )


def test_resume_may_change_what_no_finished_work_depends_on():
    assert conflicts(True, [], finetune_lr=1e-5, data_dir="/b", device="cpu") == []
    assert conflicts(False, [], lr=1e-3, seed=2) == []  # nothing pretrained yet
    assert conflicts(True, [300], num_labeled=[300, 600, 1000]) == []  # an added budget
    assert conflicts(True, [300], carry_head=True, num_labeled=[300]) == []


def test_resume_refuses_changes_to_what_finished_work_depends_on():
    (c,) = conflicts(True, [], lr=1e-3)
    assert c.startswith("lr (the pretraining already ran with lr=0.0001")
    assert conflicts(True, [], frames=8)[0].startswith("frames")  # a script's own key
    (c,) = conflicts(True, [300], finetune_lr=1e-5)
    assert "budget(s) 300 already finished" in c
    assert "drops the finished" in conflicts(True, [300], num_labeled=[600])[0]
    assert "must come first" in conflicts(True, [300], num_labeled=[600, 300])[0]
    assert conflicts(True, [300], num_labeled=[600, 300], carry_head=False) == [
        "carry_head (label budget(s) 300 already finished with True)"
    ]


def test_every_protocol_key_has_a_stage():
    from dataclasses import fields

    stages = {f.name: stage_of(f.name) for f in fields(ProtocolConfig)}
    assert stages["finetune_lr"] == "classifiers" and stages["epochs"] == "pretraining"
    assert stages["device"] is None and stages["num_labeled"] is None
    assert set(stages.values()) == {None, "pretraining", "classifiers"}
