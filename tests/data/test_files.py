"""Run-folder files (files.py): atomic writes, modes, a full disk, the one-writer lock."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest
import torch

from gksparse.data import files


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files.write_json({"a": 1}, tmp_path / "r.json")
        files.atomic_save({"x": torch.ones(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    for name in ("r.json", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["x"], torch.ones(2))


def test_a_full_disk_is_one_sentence_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    files.write_json({"old": True}, path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    for write in (lambda: files.write_json({"new": 1}, path), lambda: files.atomic_save({}, path)):
        with pytest.raises(files.NoSpaceError) as e:
            write()
        assert str(e.value) == (
            f"no space left in {tmp_path} to write result.json; free some space there, then "
            "resume the run"
        )
    assert path.read_text() == '{\n  "old": true\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary


def test_other_errors_pass_as_they_are(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.write_json({}, tmp_path / "missing" / "r.json")


def test_leftover_temporary_files_are_removed(tmp_path):
    (tmp_path / ".pretrained.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "result.json").write_text("{}")
    removed = files.remove_temporary_files(tmp_path)
    assert [p.name for p in removed] == [".pretrained.pt.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_folder_has_one_holder_at_a_time(tmp_path):
    files.hold_folder(tmp_path)
    files.hold_folder(tmp_path)  # this process again: fine
    other = [
        sys.executable,
        "-c",
        f"from gksparse.data import files; files.hold_folder({str(tmp_path)!r})",
    ]
    p = subprocess.run(other, capture_output=True, text=True)
    assert p.returncode == 1 and f"pid {os.getpid()}" in p.stderr and "FolderInUse" in p.stderr
    files.release_folder(tmp_path)
    assert subprocess.run(other).returncode == 0  # free again once released
