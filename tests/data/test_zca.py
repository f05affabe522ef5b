"""ZCA whitening against its definition, with masks, chunks, in-place use and saving."""

from __future__ import annotations

import numpy as np
import pytest

from gksparse.data import zca as zca_module
from gksparse.data.zca import ZCA, fit_zca


def correlated_frames(n: int = 2000, shape=(3, 4, 4), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    rows = rng.normal(size=(n, d)) @ mixing + rng.uniform(0, 1, d)
    return rows.astype(np.float32).reshape(n, *shape)


def reference_zca(rows: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference's formula in float64: SVD of the covariance (divided by N)."""
    rows = rows.astype(np.float64)
    mean = rows.mean(axis=0)
    centered = rows - mean
    sigma = centered.T @ centered / len(rows)
    u, s, _ = np.linalg.svd(sigma)
    return mean, u @ np.diag(1.0 / np.sqrt(s + epsilon)) @ u.T


def test_fit_matches_the_definition_and_whitens():
    frames = correlated_frames()
    z = fit_zca(frames, epsilon=1e-6)
    mean, matrix = reference_zca(frames.reshape(len(frames), -1), 1e-6)
    np.testing.assert_allclose(z.mean, mean, atol=1e-5)
    np.testing.assert_allclose(z.matrix, matrix, rtol=1e-3, atol=1e-3)
    white = z.apply(frames.copy()).reshape(len(frames), -1).astype(np.float64)
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(white.T @ white / len(white), np.eye(white.shape[1]), atol=2e-3)


def test_fewer_frames_than_dimensions_give_the_same_matrix():
    frames = correlated_frames(n=30)  # 30 frames of 48 values: a rank-29 covariance
    z = fit_zca(frames, epsilon=0.01)
    mean, matrix = reference_zca(frames.reshape(30, -1), 0.01)
    np.testing.assert_allclose(z.mean, mean, atol=1e-5)
    np.testing.assert_allclose(z.matrix, matrix, rtol=1e-4, atol=1e-4)


def test_padded_frames_are_left_out_of_the_fit_and_stay_zero():
    frames = correlated_frames(n=600)
    videos = np.zeros((20, 40, 3, 4, 4), np.float32)
    mask = np.zeros((20, 40), bool)
    lengths = np.random.default_rng(1).integers(20, 41, 20)
    lengths[0] = 40
    k = 0
    for i, n in enumerate(lengths):
        take = min(n, len(frames) - k)
        videos[i, :take] = frames[k : k + take]
        mask[i, :take] = True
        k += take
    real = videos[mask]
    z = fit_zca(videos, mask, epsilon=1e-3)
    direct = fit_zca(real, epsilon=1e-3)
    np.testing.assert_allclose(z.mean, direct.mean, atol=1e-6)
    np.testing.assert_allclose(z.matrix, direct.matrix, atol=1e-5)
    white = z.apply(videos.copy(), mask)
    assert not white[~mask].any()
    np.testing.assert_allclose(white[mask], direct.apply(real.copy()), atol=1e-5)


def test_chunked_equals_whole(monkeypatch):
    frames = correlated_frames(n=500)
    whole = fit_zca(frames)
    monkeypatch.setattr(zca_module, "CHUNK_VALUES", 48 * 7)  # 7 frames per chunk
    chunked = fit_zca(frames)
    np.testing.assert_allclose(chunked.mean, whole.mean, atol=1e-6)
    np.testing.assert_allclose(chunked.matrix, whole.matrix, atol=1e-4)
    np.testing.assert_allclose(chunked.apply(frames.copy()), whole.apply(frames.copy()), atol=1e-4)


def test_apply_in_place_or_into_a_new_array():
    frames = correlated_frames(n=300)
    z = fit_zca(frames)
    work = frames.copy()
    assert z.apply(work) is work  # writable float32: in place
    readonly = frames.copy()
    readonly.flags.writeable = False
    white = z.apply(readonly)
    assert white is not readonly and np.array_equal(readonly, frames)
    np.testing.assert_allclose(white, work, atol=1e-6)
    out = np.empty_like(frames)
    assert z.apply(frames, out=out) is out
    np.testing.assert_allclose(out, work, atol=1e-6)


def test_apply_to_a_memory_map_in_place(tmp_path):
    frames = correlated_frames(n=300)
    z = fit_zca(frames)
    mapped = np.lib.format.open_memmap(tmp_path / "v.npy", "w+", np.float32, frames.shape)
    mapped[:] = frames
    z.apply(mapped, out=mapped)
    mapped.flush()
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), z.apply(frames.copy()), atol=1e-6)


def test_save_and_load_plain_arrays(tmp_path):
    z = fit_zca(correlated_frames(n=300), epsilon=0.01)
    z.save(tmp_path / "zca.npz")
    back = ZCA.load(tmp_path / "zca.npz")
    assert back.epsilon == 0.01 and back.dim == 48
    assert np.array_equal(back.mean, z.mean) and np.array_equal(back.matrix, z.matrix)
    with np.load(tmp_path / "zca.npz") as f:
        assert sorted(f.files) == ["epsilon", "matrix", "mean"]


def test_shape_errors():
    z = fit_zca(correlated_frames(n=100))
    with pytest.raises(ValueError, match="48 values"):
        z.apply(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="mask"):
        z.apply(np.zeros((2, 3, 3, 4, 4), np.float32), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="at least 2 real frames"):
        fit_zca(np.zeros((1, 3, 4, 4), np.float32))
