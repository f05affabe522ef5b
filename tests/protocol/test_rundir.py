"""The run folder: what may change when a run is resumed, and its records."""

from __future__ import annotations

from gksparse.protocol.config import ProtocolConfig
from gksparse.protocol.rundir.resume import resume_conflicts, stage_of

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
