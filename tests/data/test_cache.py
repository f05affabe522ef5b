"""The cache of generated videos: reused when complete, never when half-written or damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gksparse
from gksparse.data import DataWarning, load, mnistrotated
from gksparse.data.cache import CacheWriter, entry_dir, read_entry

SRC = Path(gksparse.__file__).resolve().parents[1]

DIE_IN_GENERATION = """
import gksparse.data.mnistrotated as m
real = m.rotating_videos
def dying(*args):
    real(*args)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after computing, before writing
m.rotating_videos = dying
"""

DIE_BEFORE_RENAME = """
import gksparse.data.cache as c
real = c._fsync
def dying(path):
    real(path)
    if path.is_dir():  # the data and meta.json are complete: only the rename is left
        os.kill(os.getpid(), signal.SIGKILL)
c._fsync = dying
"""


def run_and_die(patch: str, root: Path) -> subprocess.CompletedProcess:
    code = f"import os, signal\n{patch}\nfrom gksparse.data import load\n" + (
        f"load('mnistrotated', {str(root)!r}, train_size=20, test_size=10, progress=False)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize("patch", [DIE_IN_GENERATION, DIE_BEFORE_RENAME], ids=["data", "rename"])
def test_a_killed_write_is_never_used(shared_mnist, isolated_cache, patch):
    done = run_and_die(patch, shared_mnist)
    assert done.returncode == -9, done.stderr.decode()
    folder = isolated_cache / "mnistrotated"
    left = list(folder.iterdir())
    assert left and all(p.name.startswith(".tmp-") for p in left)  # only the temporary folder
    data = load("mnistrotated", shared_mnist, train_size=20, test_size=10, progress=False)
    assert [p.name.startswith(".tmp-") for p in folder.iterdir()] == [False]  # stale one removed
    images, _ = mnistrotated.read_idx(shared_mnist / "mnist" / "train-images-idx3-ubyte.gz")
    k = mnistrotated.subset_index(60000, 20, 0, 0)[3]
    angle = mnistrotated.start_angles(0)[0][k]
    np.testing.assert_array_equal(
        data.train.videos[3], mnistrotated.rotating_video(images[k], angle)
    )


def test_a_damaged_entry_is_generated_again(shared_mnist, isolated_cache):
    first = np.array(
        load("mnistrotated", shared_mnist, train_size=8, test_size=4, progress=False).train.videos
    )
    (entry,) = (isolated_cache / "mnistrotated").iterdir()
    with open(entry / "train_videos.npy", "r+b") as f:
        f.truncate(os.path.getsize(entry / "train_videos.npy") // 2)
    with pytest.warns(DataWarning, match="cached videos in .* are damaged"):
        again = load("mnistrotated", shared_mnist, train_size=8, test_size=4, progress=False)
    assert np.array_equal(again.train.videos, first)


def test_changed_dataset_files_are_noticed(shared_mnist, tmp_path, monkeypatch):
    shutil.copytree(shared_mnist / "mnist", tmp_path / "mnist")
    calls = []
    real = mnistrotated.generate
    monkeypatch.setattr(mnistrotated, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)
    load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)
    assert len(calls) == 1
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)
    assert len(calls) == 2


def test_writer_commits_atomically_and_aborts_cleanly(tmp_path):
    final = entry_dir(tmp_path, "toy", {"a": 1}, "label")
    assert final == entry_dir(tmp_path, "toy", {"a": 1}, "label")
    assert final != entry_dir(tmp_path, "toy", {"a": 2}, "label")
    with pytest.raises(RuntimeError), CacheWriter(final) as writer:
        writer.create("videos", (2, 3))[:] = 1
        raise RuntimeError("generation failed")
    assert list(final.parent.iterdir()) == []
    with CacheWriter(final) as writer:
        writer.create("videos", (2, 3))[:] = 1
        writer.save("labels", np.arange(2))
        assert read_entry(final) is None  # nothing visible before the commit
    arrays, meta = read_entry(final)
    assert isinstance(arrays["videos"], np.memmap) and not arrays["videos"].flags.writeable
    assert arrays["videos"].sum() == 6 and arrays["labels"].tolist() == [0, 1]
    assert json.loads((final / "meta.json").read_text())["arrays"]["labels"]["mmap"] is False


def test_a_concurrent_writer_that_finished_first_wins(tmp_path):
    final = entry_dir(tmp_path, "toy", {}, "")
    first, second = CacheWriter(final), CacheWriter(final)
    first.create("videos", (1,))[:] = 1
    second.create("videos", (1,))[:] = 2
    first.commit()
    second.commit()  # finds a complete entry in place: keeps it, drops its own
    assert read_entry(final)[0]["videos"].tolist() == [1.0]
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_temporary_folders_of_live_processes_are_kept(tmp_path):
    final = entry_dir(tmp_path, "toy", {}, "")
    writer = CacheWriter(final)
    CacheWriter(entry_dir(tmp_path, "toy", {"other": 1}, "")).abort()
    assert writer.tmp.is_dir()  # this process is alive: its folder stays
    writer.abort()
