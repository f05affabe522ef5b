"""The probes (`gksparse.evaluation.classifiers`) on the vectors of one label budget's
labeled split.

A video's vector is what `gksparse.features` gives and the stacked head reads, averaged over
the video's real frames: the 2x2-max-pooled, flattened encoder maps (`encode_vectors`), or for
the `pixels` baseline the flattened frames themselves (`pixel_vectors`). `probe_budget` runs
both probes on the training, validation and test vectors of a budget, logs their metrics
(`n{n}.probe.linear.test_accuracy`, ...) and wall times, and `probe_lines` says them in the
protocol's progress style.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..data.containers import Videos
from ..data.seeds import Stream, stream_seed
from ..model.video import VideoModel, frame_mean
from .classifiers import knn_probe, linear_probe
from .encodings import head_inputs

LogFn = Callable[[str, float, int], None]
SPLITS = ("train", "validation", "test")
PIXEL_BATCH = 256  # videos per step of `pixel_vectors`


@torch.no_grad()
def encode_vectors(
    model: VideoModel, data: Videos, batch_size: int, device: torch.device, **options: Any
) -> np.ndarray:
    """float32 `(N, D)`: per video, the mean over its real frames of the head's per-frame
    inputs (`featurecache.head_inputs`: `model.head.features` of the encoder's maps;
    D = filters * H/2 * W/2), with its `options` (use_autocast, progress, desc). The model
    runs in eval mode; no random numbers are drawn."""
    parts = head_inputs(model, data, batch_size, device, **options)
    return np.concatenate([frame_mean(f, b["mask"]).cpu().numpy() for f, b in parts])


def encode_splits(
    model: VideoModel,
    splits: Sequence[Videos],
    n: int,
    batch_size: int,
    device: torch.device,
    use_autocast: bool = False,
    progress: bool = False,
) -> list[np.ndarray]:
    """`encode_vectors` of budget `n`'s training, validation and test `splits`."""
    return [
        encode_vectors(
            model,
            s,
            batch_size,
            device,
            use_autocast=use_autocast,
            progress=progress,
            desc=f"n={n} probe: {part} features",
        )
        for part, s in zip(SPLITS, splits, strict=True)
    ]


def pixel_vectors(data: Videos, batch_size: int = PIXEL_BATCH) -> np.ndarray:
    """float32 `(N, C*H*W)`: per video, the mean over its real frames of the flattened frames
    (the videos as loaded: whitened where the dataset whitens)."""
    out = []
    for start in range(0, len(data), batch_size):
        v = torch.from_numpy(np.array(data.videos[start : start + batch_size], np.float32))
        mask = (
            None
            if data.mask is None
            else torch.from_numpy(np.array(data.mask[start : start + batch_size]))
        )
        out.append(frame_mean(v.flatten(2), mask).numpy())
    return np.concatenate(out)


def probe_seed(seed: int, n: int) -> int:
    """scikit-learn's `random_state` for budget `n` (its own stream, below 2**32)."""
    return stream_seed(seed, n, Stream.PROBE) % 2**32


@contextlib.contextmanager
def same_rng(device: torch.device) -> Iterator[None]:
    """Leave torch's global random state (CPU, and `device`'s when CUDA) as it was."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        yield


def probe_budget(
    vectors: Sequence[np.ndarray],
    splits: Sequence[Videos],
    *,
    n: int,
    num_classes: int,
    seed: int,
    log_fn: LogFn,
    device: torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Both probes of budget `n`: `{"linear": ..., "knn": ...}` (`gksparse.evaluation.classifiers`).

    vectors: the training, validation and test `(N_split, D)` vectors; splits: the labeled
    `Videos` they come from (their labels). seed: the run's seed (sklearn's follows from it
    and `n`, `probe_seed`). Logs the test and validation numbers and each probe's seconds.
    """
    (train, val, test), labels = vectors, [s.labels for s in splits]
    started = time.perf_counter()
    linear = linear_probe(
        train,
        labels[0],
        val,
        labels[1],
        test,
        labels[2],
        num_classes=num_classes,
        seed=probe_seed(seed, n),
    )
    middle = time.perf_counter()
    knn = knn_probe(train, labels[0], test, labels[2], num_classes=num_classes, device=device)
    done = time.perf_counter()
    out = {"linear": linear, "knn": knn}
    for name, value in metrics(out, n).items():
        log_fn(name, value, 0)
    log_fn(f"n{n}.probe.linear.seconds", middle - started, 0)
    log_fn(f"n{n}.probe.knn.seconds", done - middle, 0)
    return out


def metrics(probe: dict[str, dict[str, Any]], n: int) -> dict[str, float]:
    """The numbers of a budget's probes as metrics.json names them."""
    lin, knn = probe["linear"], probe["knn"]
    return {
        f"n{n}.probe.linear.test_accuracy": lin["accuracy"],
        f"n{n}.probe.linear.test_loss": lin["loss"],
        f"n{n}.probe.linear.val_accuracy": lin["val_accuracy"],
        f"n{n}.probe.linear.val_loss": lin["val_loss"],
        f"n{n}.probe.linear.C": lin["C"],
        f"n{n}.probe.knn.test_accuracy": knn["accuracy"],
    }


def probe_lines(probe: dict[str, dict[str, Any]], n: int) -> list[str]:
    """`n=300 linear probe: test accuracy 61.2% (C=0.1)` and `n=300 k-NN: test accuracy 55.0%`."""
    lin, knn = probe["linear"], probe["knn"]
    return [
        f"n={n} linear probe: test accuracy {100 * lin['accuracy']:.1f}% (C={lin['C']:g})",
        f"n={n} k-NN: test accuracy {100 * knn['accuracy']:.1f}%",
    ]
