"""COIL-100 on small folders and archives written in the official layout by the tests."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from gksparse.data import DataError, DataWarning, coil100, fit_zca, load
from gksparse.data.coil100 import coil_split


def raw(root, **kw):
    with pytest.warns(DataWarning, match="has 3 of the 100 COIL-100 objects"):
        return load("coil100", root, zca=False, progress=False, **kw)


def test_each_object_is_a_72_frame_video_and_its_own_class(tmp_path, fake):
    fake.coil(tmp_path, objects=(1, 2, 10))
    data = raw(tmp_path)
    assert data.train.videos.shape == (3, 72, 3, 32, 32) and data.train.mask is None
    assert np.array_equal(data.train.labels, [0, 1, 2]) and data.num_classes == 3
    assert data.split == "frames" and data.test.videos.shape == data.train.videos.shape
    assert np.array_equal(data.test.videos, data.train.videos)  # pretrain and test on all
    for i, obj in enumerate((1, 2, 10)):  # objects in number order: 1, 2, 10
        for t in (0, 1, 71):
            picture = Image.fromarray(fake.coil_image(obj, 5 * t))
            small = np.asarray(picture.resize((32, 32), Image.BILINEAR))
            expected = small.transpose(2, 0, 1).astype(np.float32) / 255
            np.testing.assert_allclose(data.train.videos[i, t], expected, atol=1e-7)


def test_whitened_over_all_frames(tmp_path, fake):
    fake.coil(tmp_path)
    plain = raw(tmp_path)
    data = load("coil100", tmp_path, progress=False)  # warned once already
    expected = fit_zca(plain.train.videos, epsilon=1e-3)
    assert data.zca.matrix.shape == (3072, 3072)
    np.testing.assert_allclose(data.train.videos, expected.apply(plain.train.videos), atol=2e-3)


def test_labeled_split_takes_the_same_frames_of_every_object(tmp_path, fake):
    fake.coil(tmp_path)
    data = raw(tmp_path)
    train, val, test = data.labeled_split(8, np.random.default_rng(0))
    for part, frames in zip((train, val, test), coil_split(8), strict=True):
        assert part.videos.shape == (3, len(frames), 3, 32, 32)
        assert np.array_equal(part.videos, data.train.videos[:, frames])
        assert np.array_equal(part.labels, [0, 1, 2]) and part.mask.all()


def test_subsets_pick_objects(tmp_path, fake):
    fake.coil(tmp_path)
    data = raw(tmp_path, train_size=2, test_size=1)
    assert len(data.train) == 2 and data.num_classes == 2 and len(data.test) == 1
    assert np.array_equal(data.test.videos[0], data.train.videos[0])


def test_the_official_zip_is_unpacked(tmp_path, fake):
    folder = fake.coil(tmp_path / "made")
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "coil-100.zip", "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"coil-100/{path.name}")
        zf.writestr("coil-100/convertGroupppm2png.pl", b"# the official zip has this too\n")
    with pytest.warns(DataWarning) as got:
        data = load("coil100", root, zca=False, progress=False)
    assert any("ones (coil-100.zip)" in str(w.message) for w in got)
    assert (root / "coil-100" / "obj3__355.png").is_file()
    assert data.train.videos.shape == (3, 72, 3, 32, 32)


def test_a_path_escaping_zip_is_not_unpacked(tmp_path):
    with zipfile.ZipFile(tmp_path / "coil-100.zip", "w") as zf:
        zf.writestr("coil-100/obj1__0.png", b"png")
        zf.writestr("coil-100/../../escaped.png", b"evil")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="outside"):
        load("coil100", tmp_path, progress=False)
    assert not (tmp_path.parent / "escaped.png").exists()
    assert not (tmp_path / "coil-100").exists()


def test_a_missing_pose_is_named(tmp_path, fake):
    folder = fake.coil(tmp_path)
    (folder / "obj2__125.png").unlink()
    with pytest.warns(DataWarning), pytest.raises(DataError, match="obj2__125.png is missing"):
        load("coil100", tmp_path, progress=False)


def test_a_corrupt_image_is_named(tmp_path, fake):
    folder = fake.coil(tmp_path)
    data = (folder / "obj3__40.png").read_bytes()
    (folder / "obj3__40.png").write_bytes(data[:100])
    with pytest.warns(DataWarning), pytest.raises(DataError, match="obj3__40.png is corrupt"):
        load("coil100", tmp_path, progress=False)


def test_missing_coil_says_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=f"coil-100 folder .* in {tmp_path}"):
        load("coil100", tmp_path, download=False, progress=False)
    monkeypatch.setattr(coil100, "URL", (tmp_path / "offline.zip").as_uri())
    with pytest.raises(DataError, match="could not download coil-100.zip .*put the official"):
        load("coil100", tmp_path, progress=False)
