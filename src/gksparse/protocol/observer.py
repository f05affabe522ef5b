"""sacred's run records, written through the run folder (`gksparse.protocol.rundir.RunFolder`).

`RunObserver` is sacred's FileStorageObserver writing `<results_dir>/<dataset>/<id>/`, or into
the folder of a resumed run: every file atomically with the umask's mode, a new folder held
(locked) by this process from its creation, a resumed run keeping its first start time and
listing its resumes, and its `cout.txt` continuing the earlier output.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # from sacred

from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.serializer import flatten  # noqa: E402

from .rundir.folder import RunFolder  # noqa: E402
from .rundir.records import COUT, RUN  # noqa: E402


class RunObserver(FileStorageObserver):
    """FileStorageObserver writing `<results_dir>/<dataset>/<id>/`, or into `resume`."""

    def __init__(self) -> None:
        super().__init__("results")
        self.resume_dir: Path | None = None
        self.cout_before = ""
        self.error: str | None = None  # the sentence a failed run ended with

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.dir)

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self.resume_dir = Path(config["resume"]) if config.get("resume") else None
        base = self.resume_dir.parent if self.resume_dir else Path(config["results_dir"])
        if not self.resume_dir:
            base = base / config["dataset"]
        self.initialize(base, base / "_resources", base / "_sources", None, self.priority)
        before: dict[str, Any] = {}
        if self.resume_dir:
            earlier = RunFolder(self.resume_dir)
            before = earlier.record(optional=True) or {}
            cout = earlier.read_text(COUT)
            if cout:
                stamp = start_time.isoformat(timespec="seconds")
                self.cout_before = cout + f"\n--- resumed {stamp}\n"
        _id = super().started_event(ex_info, command, host_info, start_time, config, meta_info, _id)
        if before.get("start_time"):
            self.run_entry["start_time"] = before["start_time"]
            self.run_entry["resumed"] = [*before.get("resumed", []), start_time.isoformat()]
            self.save_json(self.run_entry, RUN)
        return _id

    def _make_run_dir(self, _id):
        if self.resume_dir:
            self.dir = str(self.resume_dir)  # already held (see `rundir.plan_resume`)
        else:
            super()._make_run_dir(_id)
            self.folder.hold()

    def save_json(self, obj, filename):
        self.folder.write_text(filename, json.dumps(flatten(obj), sort_keys=True, indent=2))

    def save_cout(self):
        self.folder.write_text(COUT, self.cout_before + self.cout)
        self.cout_write_cursor = len(self.cout)

    def failed_event(self, fail_time, fail_trace):
        if self.error and self.error not in self.cout:  # printed after the last capture
            self.cout += f"error: {self.error}\n"
            self.save_cout()
        super().failed_event(fail_time, fail_trace)
