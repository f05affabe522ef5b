"""Results folders: the numbered run folders of a dataset and the newest completed one."""

from __future__ import annotations

import os
from pathlib import Path

from .records import RUN, FolderRecords


def numbered_runs(folder: str | os.PathLike) -> list[Path]:
    """The run folders directly in `folder` (numeric names, with run.json), newest first."""
    folder = Path(folder)
    runs = [p for p in folder.iterdir() if p.name.isdigit() and (p / RUN).is_file()]
    return sorted(runs, key=lambda p: int(p.name), reverse=True)


def is_results_folder(folder: str | os.PathLike) -> bool:
    """A folder of numbered runs rather than one run (no checkpoint or run record itself)."""
    folder = Path(folder)
    if any(folder.glob("*.pt")) or (folder / RUN).is_file():
        return False
    return bool(numbered_runs(folder))


def latest_run(results: str | os.PathLike) -> Path:
    """The newest completed run of a results folder: `results/<dataset>/<id>` for the largest
    numeric `<id>` whose `run.json` says status COMPLETED.

    Runs are ordered by their number (sacred's run id), not by time: a run resumed later
    stays where it was numbered. Running, failed or interrupted runs and folders with an
    unreadable `run.json` are passed over; a FileNotFoundError says so when none is left.
    """
    results = Path(results).expanduser()
    statuses: dict[int, str] = {}
    for folder in numbered_runs(results):
        statuses[int(folder.name)] = status = FolderRecords(folder).status_or_unreadable()
        if status == "COMPLETED":
            return folder
    if not statuses:
        raise FileNotFoundError(
            f"{results} holds no run folders (numbered folders with run.json); pass a run "
            "folder (results/<dataset>/<id>), its dataset's results folder or a .pt file."
        )
    seen = ", ".join(f"{i} {statuses[i]}" for i in sorted(statuses)[-5:])
    raise FileNotFoundError(
        f"{results} holds no completed run (newest runs: {seen}); finish or resume one, or "
        "pass a run folder or a .pt file."
    )
