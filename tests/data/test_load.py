"""`load`'s arguments, the data root and the cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from gksparse.data import DATASETS, cache_root, data_root, load


def test_the_four_datasets():
    assert DATASETS == ("mnistrotated", "cifar10scanned", "coil100", "necanimal")


def test_an_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError) as info:
        load("mnist", tmp_path)
    assert str(info.value) == (
        "unknown dataset 'mnist': choose one of mnistrotated, cifar10scanned, coil100, necanimal"
    )


def test_subset_sizes_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="train_size must be at least 1"):
        load("mnistrotated", tmp_path, train_size=0)


def test_no_epsilon_means_no_whitening(tmp_path, fake):
    fake.nec(tmp_path)
    assert load("necanimal", tmp_path, zca_epsilon=None, progress=False).zca is None
    with pytest.raises(ValueError, match="zca=True needs a zca_epsilon"):
        load("necanimal", tmp_path, zca=True, zca_epsilon=None, progress=False)


def test_data_root_argument_then_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GKSPARSE_DATA", raising=False)
    assert data_root() == tmp_path / "home" / ".cache" / "gksparse"
    monkeypatch.setenv("GKSPARSE_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data_root("~/x") == tmp_path / "home" / "x"


def test_cache_argument_then_environment_then_data_root(tmp_path, monkeypatch):
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "cache"  # GKSPARSE_CACHE, set for every test
    monkeypatch.delenv("GKSPARSE_CACHE")
    assert cache_root(None, tmp_path / "root") == tmp_path / "root" / "cache"


def test_a_read_only_data_root_caches_in_the_home_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GKSPARSE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)  # no write bits: read-only even for root
    try:
        got = cache_root(None, shared)
        assert cache_root(None, shared) == got  # said once per data root
    finally:
        shared.chmod(0o755)
    assert got == Path(tmp_path / "home" / ".cache" / "gksparse" / "cache")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "is read-only, so generated videos are cached in" in lines[0]
