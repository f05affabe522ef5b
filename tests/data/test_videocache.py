"""The cache of generated videos: reused when complete, never when half-written or damaged."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gksparse
from gksparse.data import DataError, DataWarning, checksums, load, mnistrotated
from gksparse.data.paths import cache_limit
from gksparse.data.videocache import CacheWriter, entry_dir, evict, list_entries, read_entry

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
import gksparse.data.videocache as c
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


def small_mnist(root: Path):
    """A small whitened Rotated MNIST entry: six arrays, memory-mapped and loaded ones."""
    return load("mnistrotated", root, train_size=20, test_size=10, zca=True, progress=False)


def overwrite_middle(file: Path, pattern: str) -> None:
    """Overwrite up to 200 KB in the middle of the array data of `file` with 0x7f bytes
    ('0x7f') or float32 1e-30 values ('1e-30'); the size stays the same."""
    offset = np.load(file, mmap_mode="r").offset  # where the data starts, after the header
    size = file.stat().st_size
    n = min(200_000, size - offset) // 4 * 4
    start = offset + (size - offset - n) // 8 * 4
    bad = b"\x7f" * n if pattern == "0x7f" else np.full(n // 4, 1e-30, np.float32).tobytes()
    before = file.read_bytes()
    with open(file, "r+b") as f:
        f.seek(start)
        f.write(bad)
    assert file.stat().st_size == size and file.read_bytes() != before


@pytest.mark.parametrize("pattern", ["0x7f", "1e-30"])
def test_a_same_size_change_of_any_array_is_caught_and_generated_again(
    shared_mnist, isolated_cache, pattern
):
    small_mnist(shared_mnist)
    (entry,) = (isolated_cache / "mnistrotated").iterdir()
    clean = {name: np.array(a) for name, a in read_entry(entry)[0].items()}
    assert len(clean) == 6  # videos, labels and the whitening, of the training and test sets
    for name in clean:
        overwrite_middle(entry / f"{name}.npy", pattern)
        message = f"cached videos in .* are damaged \\({name}.npy does not match the checksum"
        with pytest.warns(DataWarning, match=message):
            data = small_mnist(shared_mnist)
        again = read_entry(entry)[0]
        assert again.keys() == clean.keys()
        for other, array in clean.items():
            np.testing.assert_array_equal(again[other], array, err_msg=f"{name}: {other}")
        np.testing.assert_array_equal(data.train.videos, clean["train_videos"])
        np.testing.assert_array_equal(data.test.labels, clean["test_labels"])
        np.testing.assert_array_equal(data.zca.matrix, clean["zca_matrix"])


def test_an_entry_without_checksums_is_generated_again(shared_mnist, isolated_cache):
    first = np.array(small_mnist(shared_mnist).train.videos)
    (entry,) = (isolated_cache / "mnistrotated").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    del meta["checksum"]  # as entries were written before they had checksums
    for spec in meta["arrays"].values():
        del spec["checksum"]
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(DataWarning, match="cached videos in .* have no checksums"):
        again = small_mnist(shared_mnist)
    assert np.array_equal(again.train.videos, first)
    assert json.loads((entry / "meta.json").read_text())["checksum"] == checksums.SCHEME
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_mnist(shared_mnist)  # verified, and used as it is


def test_a_checksum_depends_on_every_byte_not_on_the_threads(tmp_path, monkeypatch):
    file = tmp_path / "x.bin"
    data = bytearray(np.random.default_rng(0).bytes(10_000))
    file.write_bytes(data)
    digests = set()
    for threads in (1, 3):
        monkeypatch.setattr(checksums, "_MAX_THREADS", threads)
        digests.add(checksums.file_checksum(file, chunk=1000))  # ten chunks
    assert len(digests) == 1
    assert checksums.file_checksum(file) != digests.pop()  # the chunk size is part of it
    plain = checksums.file_checksum(file)
    data[5_555] ^= 1
    file.write_bytes(data)
    assert checksums.file_checksum(file) != plain
    file.write_bytes(b"")
    assert checksums.file_checksum(file) == hashlib.sha256(b"0\n").hexdigest()


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


FEW_COIL_OBJECTS = "ignore:.* of the 100 COIL-100 objects"


def coil(root: Path, seed: int, **kw):
    """One small entry: a single 72-frame COIL video; every seed is an entry of the same size."""
    return load("coil100", root, train_size=1, seed=seed, zca=False, progress=False, **kw)


def toy_entry(cache: Path, name: str, nbytes: int, used: float) -> Path:
    """A committed entry `cache/toy/<name>-<key>` of about `nbytes`, last used at `used`."""
    path = entry_dir(cache, "toy", {"name": name}, name)
    with CacheWriter(path) as writer:
        writer.save("x", np.zeros(nbytes, np.uint8))
    os.utime(path / "meta.json", (used, used))
    return path


def labels(cache: Path) -> list[str]:
    return [e.label for e in list_entries(cache)]


@pytest.mark.filterwarnings(FEW_COIL_OBJECTS)
def test_the_least_recently_used_entry_is_evicted_first(tmp_path, fake, isolated_cache, capsys):
    fake.coil(tmp_path)
    coil(tmp_path, 0)
    (entry,) = list_entries(isolated_cache)
    limit_gb = 3.5 * entry.size / 1e9  # room for three entries, not four
    coil(tmp_path, 1, cache_limit_gb=limit_gb)
    coil(tmp_path, 2, cache_limit_gb=limit_gb)
    entries = list_entries(isolated_cache)
    assert [e.label for e in entries] == ["seed0-train1", "seed1-train1", "seed2-train1"]
    assert {e.size for e in entries} == {entry.size}
    for used, e in zip((1000, 2000, 3000), entries, strict=True):  # no clock in the test
        os.utime(e.path / "meta.json", (used, used))
    coil(tmp_path, 0, cache_limit_gb=limit_gb)  # read again: now the most recently used
    assert len(list_entries(isolated_cache)) == 3 and capsys.readouterr().err == ""
    coil(tmp_path, 3, cache_limit_gb=limit_gb)  # a fourth: the second is the oldest now
    assert labels(isolated_cache) == ["seed0-train1", "seed2-train1", "seed3-train1"]
    (note,) = capsys.readouterr().err.splitlines()
    assert note.startswith("gksparse: removed the cached coil100 videos seed1-train1 (0.9 MB, ")
    assert note.endswith(f"to keep {isolated_cache} within its limit of 3.1 MB")


def test_the_returned_entry_is_never_evicted(tmp_path):
    oldest = toy_entry(tmp_path, "oldest", 1000, used=1000)
    toy_entry(tmp_path, "newer", 1000, used=2000)
    size = {e.label: e.size for e in list_entries(tmp_path)}["oldest"]
    removed = evict(tmp_path, size + 1, keep=oldest)  # room for one: the newer one goes
    assert [e.label for e in removed] == ["newer"] and labels(tmp_path) == ["oldest"]
    with pytest.warns(DataWarning, match="alone exceed the cache limit"):
        assert evict(tmp_path, 1, keep=oldest) == []  # too big alone: kept anyway
    assert labels(tmp_path) == ["oldest"] and read_entry(oldest) is not None


def test_unbounded_and_within_the_limit_evict_nothing(tmp_path):
    toy_entry(tmp_path, "a", 1000, used=1000)
    toy_entry(tmp_path, "b", 1000, used=2000)
    assert evict(tmp_path, math.inf) == [] and evict(tmp_path, 10**6) == []
    assert [e.label for e in evict(tmp_path, 1500)] == ["a"]  # no `keep`: only the oldest goes


@pytest.mark.filterwarnings(FEW_COIL_OBJECTS)
def test_an_entry_over_the_limit_alone_is_kept_with_one_warning(
    tmp_path, fake, isolated_cache, monkeypatch, capsys
):
    fake.coil(tmp_path)
    coil(tmp_path, 0)
    monkeypatch.setenv("GKSPARSE_CACHE_GB", "0.0001")  # 0.1 MB: less than one entry
    with pytest.warns(DataWarning) as record:
        data = coil(tmp_path, 1)
    (warning,) = [w for w in record if "cache limit" in str(w.message)]
    assert str(warning.message) == (
        "the cached coil100 videos seed1-train1 (0.9 MB) alone exceed the cache limit of "
        "0.1 MB, so they are kept over the limit; raise it with load(..., cache_limit_gb=...) "
        "or GKSPARSE_CACHE_GB (e.g. GKSPARSE_CACHE_GB=50, or 'none' for no limit)"
    )
    assert labels(isolated_cache) == ["seed1-train1"]  # the other one made way
    assert "removed the cached coil100 videos seed0-train1" in capsys.readouterr().err
    assert data.train.videos.shape == (1, 72, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = coil(tmp_path, 1)  # warned once is enough
    assert np.array_equal(again.train.videos, data.train.videos)


def test_the_limit_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("GKSPARSE_CACHE_GB", raising=False)
    assert cache_limit() == 20e9
    monkeypatch.setenv("GKSPARSE_CACHE_GB", "2.5")
    assert cache_limit() == 2.5e9 and cache_limit(1) == 1e9
    for unbounded in ("none", "inf", math.inf):
        assert cache_limit(unbounded) == math.inf
    monkeypatch.setenv("GKSPARSE_CACHE_GB", "None")
    assert cache_limit() == math.inf


@pytest.mark.parametrize("bad", [0, -1, "0", "lots", float("nan"), True])
def test_a_limit_of_nothing_is_refused(tmp_path, monkeypatch, bad):
    with pytest.raises(ValueError, match=r"^cache_limit_gb must be (more than 0 \()?a number"):
        cache_limit(bad)
    with pytest.raises(ValueError, match="cache_limit_gb must be"):
        load("coil100", tmp_path, cache_limit_gb=bad)  # before looking for any files
    monkeypatch.setenv("GKSPARSE_CACHE_GB", str(bad))
    with pytest.raises(ValueError, match=r"^\$GKSPARSE_CACHE_GB must be"):
        cache_limit()


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["fallocate", "quota", "save", "meta", "worker"])
def test_a_full_disk_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch, where):
    cache = tmp_path / "cache"
    final = entry_dir(cache, "toy", {}, "full")
    if where == "fallocate":
        monkeypatch.setattr(os, "posix_fallocate", enospc, raising=False)
    elif where == "quota":

        def quota(*args):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

        monkeypatch.setattr(os, "posix_fallocate", quota, raising=False)
    elif where == "save":
        monkeypatch.setattr(np, "save", enospc)
    elif where == "meta":
        monkeypatch.setattr(json, "dump", enospc)
    with pytest.raises(DataError) as info, CacheWriter(final) as writer:
        writer.create("videos", (1000, 250))  # 1 MB
        writer.save("labels", np.arange(3))
        if where == "worker":  # what a worker process's write into the memory map raises
            raise OSError(errno.ENOSPC, "No space left on device")
    reason = "Disk quota exceeded" if where == "quota" else "No space left on device"
    assert str(info.value).startswith(f"the disk of the cache folder {cache} is full ({reason}): ")
    assert "this entry needs at least 1.0 MB and " in str(info.value)
    assert str(info.value).endswith(
        " are free; free space there, remove cached videos with "
        "`python -m gksparse.cache clear [DATASET ...]`, or set GKSPARSE_CACHE to a folder on "
        "another disk"
    )
    assert list(final.parent.iterdir()) == []  # the temporary folder is gone


@pytest.mark.filterwarnings(FEW_COIL_OBJECTS)
def test_load_on_a_full_disk_raises_the_sentence(tmp_path, fake, isolated_cache, monkeypatch):
    fake.coil(tmp_path)
    coil(tmp_path, 0)
    monkeypatch.setattr(os, "posix_fallocate", enospc, raising=False)
    with pytest.raises(DataError, match=f"the disk of the cache folder {isolated_cache} is full"):
        coil(tmp_path, 1)
    assert [p.name for p in (isolated_cache / "coil100").iterdir()] == [
        e.path.name for e in list_entries(isolated_cache)
    ]  # only the complete entry: no temporary folder


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate here")
def test_memory_maps_reserve_their_space(tmp_path):
    writer = CacheWriter(entry_dir(tmp_path, "toy", {}, ""))
    writer.create("videos", (100, 1000))
    st = os.stat(writer.path("videos"))
    assert st.st_blocks * 512 >= st.st_size  # allocated, not a sparse file
    writer.abort()
