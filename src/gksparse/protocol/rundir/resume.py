"""How a stopped run continues: what is finished, which settings may still change.

A key may change on resume while no work it decided is done (`stage_of`): the keys of
pretraining (the data, the model) until pretraining has started, the classifier keys until a
label budget finished, the runtime keys (`config.RUNTIME_KEYS`) always. `plan_resume` checks a
run folder and the changes and returns a `ResumePlan`; it knows nothing of sacred.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ...data import files
from ..config import CLASSIFIER_KEYS, RUNTIME_KEYS, ProtocolConfig, rules
from .folder import RunFolder
from .records import CONFIG, METRICS, RunFolderError

PRETRAINING, CLASSIFIERS = "pretraining", "classifiers"


def stage_of(key: str) -> str | None:
    """The work `key` decides: PRETRAINING (the data, the model, pretraining; also every key
    a dataset script adds, such as a video folder's options), CLASSIFIERS, or None (a
    runtime key, or `num_labeled`, which `resume_conflicts` checks on its own)."""
    if key in RUNTIME_KEYS or key == "num_labeled":
        return None
    return CLASSIFIERS if key in CLASSIFIER_KEYS else PRETRAINING


def resume_conflicts(
    saved: dict[str, Any],
    new: dict[str, Any],
    *,
    pretraining_started: bool,
    finished_budgets: list[int],
) -> list[str]:
    """Why `new` cannot continue a run made with `saved`: one sentence per conflict.

    A key may change while no work it decided is done: pretraining keys until pretraining
    has started (a saved epoch or its end), classifier keys until a label budget finished;
    the finished budgets must stay in `num_labeled`, in their order and first when the head
    carries over between budgets (each budget then starts from the one before).
    """
    out = []
    for key in sorted(set(saved) | set(new)):
        if saved.get(key) == new.get(key):
            continue
        stage = stage_of(key)
        if stage == PRETRAINING and pretraining_started:
            out.append(f"{key} (the pretraining already ran with {key}={saved.get(key)!r})")
        elif stage == CLASSIFIERS and finished_budgets:
            done = ", ".join(map(str, finished_budgets))
            out.append(f"{key} (label budget(s) {done} already finished with {saved.get(key)!r})")
    budgets = list(new.get("num_labeled") or [])
    missing = [n for n in finished_budgets if n not in budgets]
    carries = new.get("carry_head")
    if carries is None:
        carries = rules(new.get("method", ""), new.get("dataset", ""), new.get("classify_dataset"))
        carries = carries["carry_head"]
    if missing:
        out.append(f"num_labeled (it drops the finished budget(s) {', '.join(map(str, missing))})")
    elif finished_budgets and carries and budgets[: len(finished_budgets)] != finished_budgets:
        out.append(
            f"num_labeled (the head carries over between budgets, so the finished "
            f"{list(finished_budgets)} must come first, in that order)"
        )
    return out


@dataclass
class ResumePlan:
    """How a run continues: the settings to run with, what changes, whether it is done."""

    folder: RunFolder
    config: dict[str, Any]  # the saved settings with the accepted changes
    changes: list[tuple[str, Any, Any]]  # (key, old, new)
    result: dict[str, Any]  # the result so far
    status: str | None  # run.json's status, None without one

    @property
    def finished(self) -> bool:
        """Completed, every budget asked for done: resuming has nothing to do."""
        budgets = self.config.get("num_labeled") or []
        done = self.result.get("pretrain") is not None and all(
            str(n) in self.result["budgets"] for n in budgets
        )
        return done and self.status == "COMPLETED"


def plan_resume(
    folder: str | os.PathLike,
    dataset: str,
    updates: dict[str, Any],
    *,
    derived: tuple[str, ...] = (),
    script: str = "-m gksparse.run {dataset}",
) -> ResumePlan:
    """The plan that continues the run in `folder` with `updates` (keys given beside
    `resume=`); `derived`: keys the experiment computes from others (not saved settings).

    Holds the folder (this process becomes its only writer: `files.FolderInUse` when another
    process writes it) and removes what killed writers left, then reads it. Raises
    `RunFolderError` (one sentence) for a folder that is not a run of `dataset`, a damaged
    record, or a change to a key that finished work depended on, and `ConfigError` for a bad
    setting. Writes no record: the caller records the changes once it acts on the plan.
    """
    run = RunFolder(folder)
    if not (run / CONFIG).is_file():
        raise RunFolderError(
            f"resume={run.path} is not a run folder (no config.json in it); pass a folder "
            "like results/<dataset>/<id>."
        )
    run.hold()
    files.remove_temporary_files(run.path)  # left by a killed writer
    saved = run.config()
    record = run.record(
        optional=True, todo="delete it and resume again (the run's other records are intact)"
    )
    todo = "delete it (the metrics logged so far are lost) or restore it, then resume"
    run.read_json(METRICS, optional=True, todo=todo)
    if saved["dataset"] != dataset:
        command = script.format(dataset=saved["dataset"])
        raise RunFolderError(
            f"{run.path} is a run of {saved['dataset']}, not {dataset}; resume it with: "
            f"python {command} with resume={run.path}"
        )
    result = run.read_result()
    # `derived`: the experiment's to compute; `progress`: where the output goes decides it
    # now (runs before the terminal check saved True, which forced bars into job logs)
    saved = {k: v for k, v in saved.items() if k not in (*derived, "progress")}
    new = dict(saved)
    new.update(updates)
    new["resume"] = str(run.path)
    ProtocolConfig.from_dict(new)  # a ConfigError for a bad change
    finished = [n for n in saved.get("num_labeled", []) if str(n) in result["budgets"]]
    started = run.pretraining_started(result)
    conflicts = resume_conflicts(saved, new, pretraining_started=started, finished_budgets=finished)
    if conflicts:
        raise RunFolderError(
            f"resume={run.path} cannot change {conflicts[0]}; start a new run instead (the "
            "same command without resume=, with the settings you want)."
        )
    changes = [
        (key, saved.get(key), new.get(key))
        for key in sorted(set(saved) | set(new))
        if key != "resume" and saved.get(key) != new.get(key)
    ]
    status = record.get("status") if isinstance(record, dict) else None
    return ResumePlan(run, new, changes, result, status)
