"""ZCA whitening of frames, fitted on real (unpadded) training frames, applied chunk by chunk.

For frames flattened to `D = C*H*W` values, with mean `m` and covariance `S = U diag(s) U^T`
over the fitting frames, `W = U diag(1 / sqrt(s + epsilon)) U^T` and a frame `x` becomes
`(x - m) W`. Memory: besides the data itself, only the `D x D` covariance and a chunk of
frames are held (D = 3072 for 32x32x3 frames: 72 MiB in float64). With fewer frames than
dimensions the same matrix comes from the smaller Gram matrix of the frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

CHUNK_VALUES = 1 << 23  # values per chunk: 32 MiB of float32


@dataclass
class ZCA:
    """A fitted whitening.

    mean:   float32 `(D,)`, the mean frame.
    matrix: float32 `(D, D)`, symmetric; whitened = (frame - mean) @ matrix.
    epsilon: the regulariser added to the covariance's eigenvalues.
    """

    mean: np.ndarray
    matrix: np.ndarray
    epsilon: float

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def apply(
        self,
        x: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        out: np.ndarray | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Whiten frames chunk by chunk.

        x:    `(N, T, C, H, W)` videos, `(M, C, H, W)` frames or `(M, D)` rows, any float dtype.
        mask: bool `(N, T)` (or `(M,)`): only True frames are whitened; the others are set to 0.
        out:  where to write (same shape as x); default: x itself when it is a writable float32
              array (in place), else a new float32 array.
        Returns `out`.
        """
        rows = _rows(x, self.dim)
        if out is None:
            in_place = x.dtype == np.float32 and x.flags.writeable
            out = x if in_place else np.empty(x.shape, np.float32)
        out_rows = _rows(out, self.dim, writable=True)
        keep = None if mask is None else np.asarray(mask, bool).reshape(-1)
        if keep is not None and keep.shape[0] != rows.shape[0]:
            raise ValueError(f"mask {np.shape(mask)} does not match {x.shape}")
        step = max(1, CHUNK_VALUES // self.dim)
        mean = self.mean.astype(np.float32)
        matrix = self.matrix.astype(np.float32)
        for i in tqdm(range(0, rows.shape[0], step), desc="whiten", disable=not progress):
            j = min(i + step, rows.shape[0])
            chunk = np.asarray(rows[i:j], dtype=np.float32) - mean
            if keep is not None:
                chunk[~keep[i:j]] = 0.0
            white = chunk @ matrix
            if keep is not None:
                white[~keep[i:j]] = 0.0
            out_rows[i:j] = white
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Save as an `.npz` of plain arrays (mean, matrix, epsilon)."""
        np.savez(path, mean=self.mean, matrix=self.matrix, epsilon=np.float64(self.epsilon))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ZCA:
        """Read a whitening saved by `save`."""
        with np.load(path) as f:
            return cls(f["mean"], f["matrix"], float(f["epsilon"]))


def fit_zca(
    frames_or_videos: np.ndarray,
    mask: np.ndarray | None = None,
    epsilon: float = 1e-3,
    *,
    progress: bool = False,
) -> ZCA:
    """Fit a ZCA whitening on frames.

    frames_or_videos: `(N, T, C, H, W)` videos, `(M, C, H, W)` frames or `(M, D)` rows; may be
        a memory map, read in chunks (two passes: mean, then covariance).
    mask: bool `(N, T)` (or `(M,)`), True for real frames; padded frames are left out.
    epsilon: added to the eigenvalues of the covariance (which is divided by the frame count).
    """
    x = frames_or_videos
    dim = int(np.prod(x.shape[-3:])) if x.ndim >= 4 else int(x.shape[-1])
    rows = _rows(x, dim)
    keep = None if mask is None else np.asarray(mask, bool).reshape(-1)
    if keep is not None and keep.shape[0] != rows.shape[0]:
        raise ValueError(f"mask {np.shape(mask)} does not match {x.shape}")
    count = rows.shape[0] if keep is None else int(keep.sum())
    if count < 2:
        raise ValueError(f"ZCA needs at least 2 real frames, got {count}")
    step = max(1, CHUNK_VALUES // dim)
    chunks = range(0, rows.shape[0], step)

    def real(i: int) -> np.ndarray:
        chunk = np.asarray(rows[i : i + step], dtype=np.float32)
        return chunk if keep is None else chunk[keep[i : i + step]]

    total = np.zeros(dim, np.float64)
    for i in tqdm(chunks, desc="zca mean", disable=not progress):
        total += real(i).sum(axis=0, dtype=np.float64)
    mean = total / count
    if count < dim:
        centered = np.concatenate([real(i) for i in chunks]).astype(np.float64) - mean
        matrix = _low_rank_matrix(centered, epsilon)
    else:
        cov = np.zeros((dim, dim), np.float64)
        for i in tqdm(chunks, desc="zca covariance", disable=not progress):
            chunk = real(i) - mean.astype(np.float32)
            cov += chunk.T @ chunk  # float32 products per chunk, summed in float64
        cov /= count
        eigenvalues, vectors = np.linalg.eigh(cov)
        del cov
        scale = 1.0 / np.sqrt(np.clip(eigenvalues, 0.0, None) + epsilon)
        matrix = (vectors * scale) @ vectors.T
    return ZCA(mean.astype(np.float32), matrix.astype(np.float32), float(epsilon))


def _low_rank_matrix(centered: np.ndarray, epsilon: float) -> np.ndarray:
    """The whitening matrix from fewer frames than dimensions, `centered` float64 `(n, D)`.

    The covariance has rank < n; its eigenvectors with nonzero eigenvalues come from the
    `n x n` Gram matrix, and the rest of the space has eigenvalue 0, so
    `W = I / sqrt(eps) + V diag(1 / sqrt(s + eps) - 1 / sqrt(eps)) V^T`: the same matrix as the
    full eigendecomposition, at the cost of an `n x n` one.
    """
    n, dim = centered.shape
    eigenvalues, u = np.linalg.eigh(centered @ centered.T / n)
    keep = eigenvalues > eigenvalues.max(initial=0.0) * 1e-10
    eigenvalues, u = eigenvalues[keep], u[:, keep]
    vectors = centered.T @ u / np.sqrt(n * eigenvalues)  # (D, r), orthonormal columns
    base = 1.0 / np.sqrt(epsilon)
    matrix = (vectors * (1.0 / np.sqrt(eigenvalues + epsilon) - base)) @ vectors.T
    matrix[np.diag_indices(dim)] += base
    return matrix


def _rows(x: np.ndarray, dim: int, writable: bool = False) -> np.ndarray:
    """`x` as `(M, dim)` rows (a view when `writable`)."""
    if x.ndim >= 4:
        if int(np.prod(x.shape[-3:])) != dim:
            raise ValueError(f"frames of shape {x.shape[-3:]} do not have {dim} values")
    elif x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected (M, {dim}) rows or frames with {dim} values, got {x.shape}")
    rows = x.reshape(-1, dim)
    if writable and x.size and not np.may_share_memory(rows, x):
        raise ValueError(f"out must be a contiguous array to be written in place, got {x.shape}")
    return rows
