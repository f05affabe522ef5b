"""Rotated MNIST: the video definition, loading the real MNIST, its files, downloads and cache."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from PIL import Image

from gksparse.data import DataError, DataWarning, load, mnistrotated, subset_index
from gksparse.data.mnistrotated import read_idx, rotating_video, start_angles

NAMES = list(mnistrotated.MD5)


def digit(seed: int = 0) -> np.ndarray:
    """An asymmetric uint8 28x28 picture."""
    image = np.zeros((28, 28), np.uint8)
    image[4:20, 6:10] = 255
    image[4:8, 6:22] = 180
    image += np.random.default_rng(seed).integers(0, 30, (28, 28), dtype=np.uint8)
    return image


def test_frames_are_pil_rotations_cut_to_the_top_left_corner():
    image, start = digit(), 123.456
    video = rotating_video(image, start)
    assert video.shape == (36, 1, 14, 14) and video.dtype == np.float32
    for t in (0, 1, 17, 35):
        turned = Image.fromarray(image).rotate(start + 10 * t, resample=Image.BILINEAR)
        assert turned.size == (28, 28)  # same canvas
        expected = np.asarray(turned)[:14, :14].astype(np.float32) / 255
        np.testing.assert_array_equal(video[t, 0], expected)


def test_rotation_is_counter_clockwise_by_360_over_frames():
    image = digit()
    video = rotating_video(image, 90.0, frames=4, size=28)
    for t in range(4):  # PIL turns exact multiples of 90 degrees without interpolation
        np.testing.assert_array_equal(video[t, 0] * 255, np.rot90(image, 1 + t))
    assert (rotating_video(image, 0.0, frames=2, size=28)[1, 0] * 255 == np.rot90(image, 2)).all()


def test_frame_t_is_the_video_started_t_steps_later():
    image = digit(1)
    video = rotating_video(image, 17.25)
    np.testing.assert_array_equal(video[5], rotating_video(image, 17.25 + 50)[0])


def test_rotating_video_checks_its_input():
    with pytest.raises(ValueError, match="uint8"):
        rotating_video(digit().astype(np.float32), 0.0)
    with pytest.raises(ValueError, match="size"):
        rotating_video(digit(), 0.0, size=29)


def test_start_angles_are_uniform_in_a_turn_and_seeded():
    train, test = start_angles(0)
    assert train.shape == (60000,) and test.shape == (10000,)
    assert train.min() >= 0 and train.max() < 360 and abs(train.mean() - 180) < 3
    assert not np.array_equal(train, start_angles(1)[0])


def test_load_real_mnist(shared_mnist):
    data = load("mnistrotated", shared_mnist, train_size=40, test_size=20, seed=5, progress=False)
    assert data.name == "mnistrotated" and data.num_classes == 10 and data.split == "random"
    assert data.zca is None  # not whitened (METHOD.md)
    assert data.train.videos.shape == (40, 36, 1, 14, 14)
    assert data.test.videos.shape == (20, 36, 1, 14, 14)
    assert data.train.videos.dtype == np.float32 and data.train.mask is None
    assert 0 <= data.train.videos.min() and data.train.videos.max() <= 1
    folder = shared_mnist / "mnist"
    angles = start_angles(5)
    for part, part_id, size in (("train", 0, 40), ("test", 1, 20)):
        images, _ = read_idx(folder / f"{NAMES[2 * part_id]}.gz")
        labels, _ = read_idx(folder / f"{NAMES[2 * part_id + 1]}.gz")
        index = subset_index(len(images), size, 5, part_id)
        videos = getattr(data, part)
        assert np.array_equal(videos.labels, labels[index])
        for i in (0, size - 1):
            k = index[i]
            np.testing.assert_array_equal(
                videos.videos[i], rotating_video(images[k], angles[part_id][k])
            )


def test_second_load_reads_the_read_only_cache(shared_mnist, isolated_cache):
    first = load("mnistrotated", shared_mnist, train_size=30, test_size=10, progress=False)
    again = load("mnistrotated", shared_mnist, train_size=30, test_size=10, progress=False)
    assert isinstance(again.train.videos, np.memmap) and not again.train.videos.flags.writeable
    assert np.array_equal(first.train.videos, again.train.videos)
    assert len(list((isolated_cache / "mnistrotated").iterdir())) == 1
    other = load("mnistrotated", shared_mnist, train_size=30, test_size=10, seed=1, progress=False)
    assert not np.array_equal(first.train.videos, other.train.videos)


def copy_mnist(shared_mnist, root):
    shutil.copytree(shared_mnist / "mnist", root / "mnist")
    return root / "mnist"


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as info:
        load("mnistrotated", tmp_path, download=False, progress=False)
    message = str(info.value)
    assert "put the four official MNIST files train-images-idx3-ubyte.gz, " in message
    assert f"in {tmp_path / 'mnist'}" in message and "\n" not in message


def test_truncated_and_corrupt_files_are_named(shared_mnist, tmp_path):
    folder = copy_mnist(shared_mnist, tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"the MNIST file {path} is corrupt or truncated"):
        load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)
    path.write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(DataError, match="corrupt or truncated .*idx header"):
        load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)
    raw = bytearray(gzip.decompress(data))
    path.write_bytes(gzip.compress(bytes(raw[:-3])))  # a clean gzip of a short file
    with pytest.raises(DataError, match="holds 9997 values instead of 10000"):
        load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)


def test_a_re_encoded_local_copy_is_used_with_one_warning(shared_mnist, tmp_path):
    folder = copy_mnist(shared_mnist, tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 1
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.warns(DataWarning, match="t10k-images-idx3-ubyte.gz.*using them") as got:
        load("mnistrotated", tmp_path, train_size=5, test_size=5, progress=False)
        load("mnistrotated", tmp_path, train_size=6, test_size=5, progress=False)
    assert len([w for w in got if issubclass(w.category, DataWarning)]) == 1


def test_missing_files_are_downloaded_and_verified(shared_mnist, tmp_path, monkeypatch):
    offline = (tmp_path / "offline").as_uri() + "/"
    monkeypatch.setattr(mnistrotated, "MIRRORS", (offline, (shared_mnist / "mnist").as_uri() + "/"))
    root = tmp_path / "root"
    data = load("mnistrotated", root, train_size=5, test_size=5, progress=False)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    assert data.train.videos.shape == (5, 36, 1, 14, 14)


def test_a_tampered_download_is_deleted_and_rejected(shared_mnist, tmp_path, monkeypatch):
    mirror = copy_mnist(shared_mnist, tmp_path / "mirror")
    path = mirror / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    path.write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setattr(mnistrotated, "MIRRORS", (mirror.as_uri() + "/",))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz does not match: md5"):
        load("mnistrotated", root, train_size=5, test_size=5, progress=False)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_offline_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setattr(mnistrotated, "MIRRORS", ((tmp_path / "offline").as_uri() + "/",))
    with pytest.raises(DataError) as info:
        load("mnistrotated", tmp_path / "root", progress=False)
    message = str(info.value)
    assert message.startswith("could not download train-images-idx3-ubyte.gz (")
    assert message.endswith(f"t10k-labels-idx1-ubyte.gz in {tmp_path / 'root' / 'mnist'}")
