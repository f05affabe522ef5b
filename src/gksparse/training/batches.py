"""Mini-batches of `Videos` as tensors, for one process or one rank of a process group."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..data.containers import Videos
from . import distributed
from .losses import Batch


def batches(
    data: Videos,
    batch_size: int,
    device: torch.device,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """Mini-batches of `data` as tensors on `device`: video `(B, T, C, H, W)`, mask, label.

    With `world_size` > 1, yields `rank`'s contiguous share (`distributed.shard_bounds`) of
    every global batch of `batch_size`; all ranks pass the same `generator` state, so they
    split the same global batches. A rank whose share is empty (a last global batch with
    fewer videos than ranks) gets one fully padded video (mask all False) instead, as the
    encoder cannot run on an empty batch: padded frames never win a lifetime contest, and
    `fit` gives that batch a zero weight.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    pin = device.type == "cuda"
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if shuffle:  # sorted reads are faster on memory maps; order within a batch is moot
            idx = np.sort(idx)
        padded = False
        if world_size > 1:
            a, b = distributed.shard_bounds(len(idx), rank, world_size)
            padded = a == b
            idx = idx[:1] if padded else idx[a:b]
        batch = load_batch(data, idx, device, pin)
        if padded:
            batch["mask"] = torch.zeros(batch["video"].shape[:2], dtype=torch.bool, device=device)
        yield batch


def load_batch(data: Videos, idx: np.ndarray, device: torch.device, pin: bool) -> Batch:
    """The videos at the sorted indices `idx` as a batch on `device` (pinned first if `pin`)."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1:
        idx = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous read, cheap on memmaps
    return {
        "video": _to(data.videos[idx], device, pin, torch.float32),
        "mask": None if data.mask is None else _to(data.mask[idx], device, pin),
        "label": None if data.labels is None else _to(data.labels[idx], device, pin, torch.long),
    }


def _to(a: np.ndarray, device: torch.device, pin: bool, dtype=None) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # a read-only memory map: torch wants its own copy
        a = a.copy()
    t = torch.from_numpy(a)
    if dtype is not None:
        t = t.to(dtype)
    if pin:
        t = t.pin_memory()
    return t.to(device, non_blocking=pin)
