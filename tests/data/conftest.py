"""Fixtures for the dataset tests: the real data in ../shared/data, and small folders in the
official COIL-100 and NEC Animal layouts written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import coil_image, nec_frame, write_coil, write_nec

from gksparse.data import download

REPO = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    """The real datasets: `$GKSPARSE_DATA`, else `<repo>/../shared/data`."""
    return Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test caches into its own folder and sees each 'warn once' afresh."""
    monkeypatch.setenv("GKSPARSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "_warned", set())
    return tmp_path / "cache"


@pytest.fixture
def shared_mnist() -> Path:
    """The data root holding the real MNIST files (skips when absent)."""
    root = shared_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST in {root}: set GKSPARSE_DATA to the shared data folder")
    return root


@pytest.fixture
def shared_cifar() -> Path:
    """The data root holding the real CIFAR-10 batches (skips when absent)."""
    root = shared_root()
    if not (root / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"no CIFAR-10 in {root}: set GKSPARSE_DATA to the shared data folder")
    return root


@pytest.fixture
def fake():
    """The writers of small official-layout folders: `fake.coil(root)`, `fake.nec(root)`, ..."""

    class Fake:
        coil = staticmethod(write_coil)
        coil_image = staticmethod(coil_image)
        nec = staticmethod(write_nec)
        nec_frame = staticmethod(nec_frame)

    return Fake
