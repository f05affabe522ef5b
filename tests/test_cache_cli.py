"""`python -m gksparse.cache`: listing and clearing the cached videos, and its refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gksparse
from gksparse.cache import main
from gksparse.data.videocache import CacheWriter, entry_dir, format_size, format_time, list_entries

SRC = Path(gksparse.__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder with two Rotated MNIST entries and one COIL-100 entry (7 MB)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GKSPARSE_CACHE", str(cache))
    monkeypatch.delenv("GKSPARSE_CACHE_GB", raising=False)
    for dataset, label, nbytes, used in [
        ("mnistrotated", "seed0-train20", 2_000_000, 1000),
        ("mnistrotated", "seed1-train20", 2_000_000, 2000),
        ("coil100", "all", 3_000_000, 3000),
    ]:
        path = entry_dir(cache, dataset, {"label": label}, label)
        with CacheWriter(path) as writer:
            writer.save("videos", np.zeros(nbytes - 128, np.uint8))  # 128: the .npy header
        os.utime(path / "meta.json", (used, used))
    return cache


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_each_entry_then_the_total_and_the_limit(cache, capsys):
    code, out, err = run(["list", "--cache-dir", str(cache)], capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"coil100       all              3.0 MB  last used {format_time(3000)}",
        f"mnistrotated  seed0-train20    2.0 MB  last used {format_time(1000)}",
        f"mnistrotated  seed1-train20    2.0 MB  last used {format_time(2000)}",
        f"3 entries in {cache}: 7.0 MB in all, limit 20.0 GB "
        "(the default of 20 GB; set $GKSPARSE_CACHE_GB to change it)",
    ]


def test_list_defaults_to_the_cache_of_load_and_its_limit(cache, capsys, monkeypatch):
    monkeypatch.setenv("GKSPARSE_CACHE_GB", "none")
    code, out, _ = run(["list"], capsys)
    assert code == 0
    assert out.splitlines()[-1] == (
        f"3 entries in {cache}: 7.0 MB in all, limit none (from $GKSPARSE_CACHE_GB)"
    )


def test_clear_named_datasets_then_all(cache, capsys):
    live = CacheWriter(entry_dir(cache, "mnistrotated", {"label": "x"}, "x"))  # being written
    code, out, _ = run(["clear", "mnistrotated", "--cache-dir", str(cache)], capsys)
    assert code == 0
    assert out.splitlines() == [
        "removed mnistrotated seed0-train20 (2.0 MB)",
        "removed mnistrotated seed1-train20 (2.0 MB)",
        f"removed 2 entries (4.0 MB) from {cache}",
    ]
    assert [e.label for e in list_entries(cache)] == ["all"]
    assert live.tmp.is_dir()  # a live writer's temporary folder is never touched
    code, out, _ = run(["clear"], capsys)
    assert code == 0 and out.splitlines()[-1] == f"removed 1 entry (3.0 MB) from {cache}"
    assert list_entries(cache) == [] and live.tmp.is_dir()
    live.abort()


NOWHERE = "the cache folder {tmp}/nowhere does not exist"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["list", "--cache-dir", "{tmp}/nowhere"], NOWHERE),
        (["clear", "--cache-dir", "{tmp}/nowhere"], NOWHERE),
        (["list", "--cache-dir", "{tmp}/a-file"], "the cache folder {tmp}/a-file is not a folder"),
        (
            ["clear", "mnist", "--cache-dir", "{cache}"],
            "unknown dataset 'mnist': choose from mnistrotated, cifar10scanned, coil100, necanimal",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_code_2(cache, tmp_path, capsys, argv, message):
    (tmp_path / "a-file").write_text("")
    argv = [a.format(tmp=tmp_path, cache=cache) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err == f"error: {message.format(tmp=tmp_path)}\n"
    assert len(list_entries(cache)) == 3  # nothing removed


def test_sizes_in_megabytes_and_gigabytes():
    assert [format_size(n) for n in (0, 12_345, 860_000, 2_049_000_000, float("inf"))] == [
        "0.0 MB",
        "<0.1 MB",
        "0.9 MB",
        "2.0 GB",
        "none",
    ]


def test_a_bad_limit_in_the_environment_is_refused(cache, capsys, monkeypatch):
    monkeypatch.setenv("GKSPARSE_CACHE_GB", "0")
    code, _, err = run(["list"], capsys)
    assert code == 2
    assert err == (
        "error: $GKSPARSE_CACHE_GB must be more than 0 (a number of GB, or 'none' for no "
        "limit), got '0'\n"
    )


def test_usage_errors_return_2(capsys):
    assert main(["tidy"]) == 2
    assert "invalid choice: 'tidy'" in capsys.readouterr().err


def test_runs_as_a_module(cache, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "gksparse.cache", "list", "--cache-dir"]
    done = subprocess.run(
        [*command, str(cache)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"3 entries in {cache}: 7.0 MB in all")
    done = subprocess.run(
        [*command, str(tmp_path / "nowhere")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == f"error: the cache folder {tmp_path / 'nowhere'} does not exist\n"
