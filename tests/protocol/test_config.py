"""ProtocolConfig's checks, the reference's rules it resolves, and what may change on resume."""

from __future__ import annotations

import pytest
import torch

from gksparse.data.splits import budget_range
from gksparse.protocol.config import ConfigError, ProtocolConfig
from gksparse.protocol.stages import ADAM_OPTIMIZER


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
    assert make(method="groupwtacrnn").clipnorm == 1.0 and make().clipnorm == 0.0
    assert make(method="denoisingcrnn").clipnorm == 0.0  # the reference did not clip it
    assert make(method="groupwtacnn", clipnorm=2.0).clipnorm == 2.0
    assert make().carry_head and make(dataset="cifar10scanned").carry_head
    assert not make(dataset="coil100", num_labeled=[4]).carry_head
    assert not make(dataset="necanimal", num_labeled=[4]).carry_head
    assert not make(carry_head=False).carry_head
    assert make(method="vgg19").zca is False and make().zca is None
    assert make(method="vgg19", zca=True).zca is True
    cfg = make()
    assert (cfg.autocast, cfg.adam, cfg.class_weight, ADAM_OPTIMIZER[cfg.adam]) == (
        False,
        "keras",
        "none",
        "adam",
    )
