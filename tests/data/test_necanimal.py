"""NEC Animal on small folders written in the official layout: padding, mask and whitening."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gksparse.data import DataError, fit_zca, load
from gksparse.data.necanimal import read_index


def test_sequences_are_padded_and_masked(tmp_path, fake):
    folder = fake.nec(tmp_path)
    data = load("necanimal", tmp_path, zca=False, progress=False)
    assert data.train.videos.shape == (3, 8, 3, 32, 32)
    assert data.train.labels is None and data.num_classes == 0 and data.split == "none"
    lengths = data.train.mask.sum(axis=1)
    assert lengths.tolist() == [5, 8, 3] and data.train.mask[:, 0].all()
    assert not data.train.videos[~data.train.mask].any()  # padded frames are zeros
    first = Image.open(folder / "img_clean" / "img0006.jpg").convert("RGB")
    expected = np.asarray(first.resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(data.train.videos[1, 0], expected, atol=1e-6)
    assert data.test.videos.shape == data.train.videos.shape


def test_whitening_skips_padded_frames(tmp_path, fake):
    fake.nec(tmp_path)
    plain = load("necanimal", tmp_path, zca=False, progress=False)
    data = load("necanimal", tmp_path, zca_epsilon=0.1, progress=False)
    real = plain.train.videos[plain.train.mask]
    expected = fit_zca(real, epsilon=0.1)  # fitted on the 16 real frames only
    np.testing.assert_allclose(data.zca.mean, expected.mean, atol=1e-6)
    np.testing.assert_allclose(data.train.videos[plain.train.mask], expected.apply(real), atol=1e-3)
    assert not data.train.videos[~plain.train.mask].any()  # padding stays zero


def test_the_last_sequence_ends_at_the_last_frame(tmp_path, fake):
    fake.nec(tmp_path, last_end="")  # the index gives no end for the last sequence
    data = load("necanimal", tmp_path, zca=False, progress=False)
    assert data.train.mask.sum(axis=1).tolist() == [5, 8, 3]
    folder = tmp_path / "necanimal"
    assert read_index(folder / "seq_ref_clean.txt", 16)[-1] == (14, 16)
    fake.nec(tmp_path / "other", last_end="4000")  # a wrong end is fixed as the reference did
    assert read_index(tmp_path / "other/necanimal/seq_ref_clean.txt", 16)[-1] == (14, 16)


def test_no_labels_so_no_labeled_split(tmp_path, fake):
    fake.nec(tmp_path)
    data = load("necanimal", tmp_path, zca=False, progress=False)
    with pytest.raises(ValueError, match="necanimal has no labels"):
        data.labeled_split(4, np.random.default_rng(0))


def test_missing_nec_says_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as info:
        load("necanimal", tmp_path, progress=False)
    assert str(info.value) == (
        "NEC Animal has no public download, so put its img_clean/imgNNNN.jpg frames and "
        f"seq_ref_clean.txt in {tmp_path / 'necanimal'}"
    )


def test_a_missing_frame_is_named(tmp_path, fake):
    folder = fake.nec(tmp_path)
    (folder / "img_clean" / "img0009.jpg").unlink()
    with pytest.raises(DataError, match="img0009.jpg is missing"):
        load("necanimal", tmp_path, progress=False)


def test_a_bad_index_line_is_named(tmp_path, fake):
    folder = fake.nec(tmp_path)
    index = folder / "seq_ref_clean.txt"
    index.write_text(index.read_text().replace("6 13", "6 to 13"))
    with pytest.raises(DataError, match="line 6 of .*seq_ref_clean.txt is not 'start end'"):
        load("necanimal", tmp_path, progress=False)


def test_a_corrupt_frame_is_named(tmp_path, fake):
    folder = fake.nec(tmp_path)
    (folder / "img_clean" / "img0002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="img0002.jpg is corrupt"):
        load("necanimal", tmp_path, progress=False)
