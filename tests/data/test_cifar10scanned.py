"""Scanned CIFAR-10: the scan order, loading the real CIFAR-10, its archive, files and whitening."""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import pytest

from gksparse.data import DataError, DataWarning, cifar10scanned, fit_zca, load, subset_index
from gksparse.data.cifar10scanned import read_batch, scanned_video

# METHOD.md: down the first column of window positions, up the second, down the third.
SNAKE = [(0, 0), (8, 0), (16, 0), (16, 8), (8, 8), (0, 8), (0, 16), (8, 16), (16, 16)]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def test_scan_is_a_vertical_snake_of_windows():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    video = scanned_video(image)
    assert video.shape == (9, 3, 16, 16) and video.dtype == np.float32
    for t, (row, col) in enumerate(SNAKE):
        expected = image[row : row + 16, col : col + 16].transpose(2, 0, 1) / np.float32(255)
        np.testing.assert_array_equal(video[t], expected)


def test_scan_with_other_sizes():
    image = np.arange(6 * 6, dtype=np.uint8).reshape(6, 6, 1)
    video = scanned_video(image, size=2, stride=2) * 255
    corners = [v[0, 0, 0] for v in video]
    assert corners == [0, 12, 24, 26, 14, 2, 4, 16, 28]  # down, up, down over 3x3 positions
    with pytest.raises(ValueError, match="uint8"):
        scanned_video(image.astype(np.float32))


def test_load_real_cifar_unwhitened(shared_cifar):
    with pytest.warns(DataWarning, match="CIFAR-10 files in .* differ from the official ones"):
        data = load(
            "cifar10scanned", shared_cifar, train_size=60, test_size=30, zca=False, progress=False
        )
    assert data.train.videos.shape == (60, 9, 3, 16, 16) and data.zca is None
    assert data.test.videos.shape == (30, 9, 3, 16, 16) and data.num_classes == 10
    images, labels = read_batch(shared_cifar / "cifar-10-batches-py" / "test_batch")
    index = subset_index(10000, 30, 0, 1)
    assert np.array_equal(data.test.labels, labels[index])
    for i in (0, 29):
        expected = scanned_video(images[index[i]].transpose(1, 2, 0))
        np.testing.assert_array_equal(data.test.videos[i], expected)


@pytest.mark.filterwarnings("ignore:CIFAR-10 files")
def test_load_real_cifar_whitened_with_the_training_frames(shared_cifar):
    raw = load(
        "cifar10scanned", shared_cifar, train_size=300, test_size=40, zca=False, progress=False
    )
    data = load(
        "cifar10scanned",
        shared_cifar,
        train_size=300,
        test_size=40,
        zca_epsilon=0.01,
        progress=False,
    )
    assert data.zca is not None and data.zca.epsilon == 0.01 and data.zca.matrix.shape == (768, 768)
    expected = fit_zca(raw.train.videos, epsilon=0.01)
    np.testing.assert_allclose(data.zca.matrix, expected.matrix, atol=1e-4)
    np.testing.assert_allclose(data.train.videos, expected.apply(raw.train.videos), atol=1e-4)
    np.testing.assert_allclose(data.test.videos, expected.apply(raw.test.videos), atol=1e-4)
    assert abs(float(data.train.videos.mean())) < 1e-4


def write_batch(path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        "batch_label": "fake",
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_archive(path, n: int = 12) -> None:
    """A small `cifar-10-python.tar.gz` in the official layout (batches of n images)."""
    staging = path.parent / "staging"
    staging.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate([*BATCHES, "test_batch"]):
            write_batch(staging / name, n, i)
            tar.add(staging / name, f"cifar-10-batches-py/{name}")


def test_the_official_archive_is_unpacked(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_archive(root / "cifar-10-python.tar.gz")
    with pytest.warns(DataWarning, match="cifar-10-python.tar.gz") as got:
        data = load("cifar10scanned", root, zca=False, progress=False)
    assert len([w for w in got if issubclass(w.category, DataWarning)]) == 1
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert data.train.videos.shape == (60, 9, 3, 16, 16) and len(data.test) == 12


def test_a_tampered_archive_download_is_rejected(tmp_path, monkeypatch):
    write_archive(tmp_path / "served.tar.gz")
    monkeypatch.setattr(cifar10scanned, "URL", (tmp_path / "served.tar.gz").as_uri())
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"does not match: md5 .* was deleted\); put the official"):
        load("cifar10scanned", root, progress=False)
    assert not (root / "cifar-10-python.tar.gz").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_missing_cifar_says_what_to_put_where(tmp_path):
    with pytest.raises(
        DataError,
        match=f"put the official cifar-10-python.tar.gz or its unpacked "
        f"cifar-10-batches-py folder in {tmp_path}",
    ):
        load("cifar10scanned", tmp_path, download=False, progress=False)


def test_corrupt_batches_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate([*BATCHES, "test_batch"]):
        write_batch(folder / name, 4, i)
    data = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
    with pytest.warns(DataWarning), pytest.raises(DataError, match="data_batch_3 is corrupt"):
        load("cifar10scanned", tmp_path, progress=False)


def test_pickles_that_would_run_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="unexpected object .*system"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists()
