"""Lifetime sparsity over the global batch of several processes (METHOD.md section 2).

Under torchrun each process holds a shard of the global mini-batch along dim 0. The lifetime
step ranks over the whole global batch: `global_topk_mask` finds the global winners with
small collectives (k = 1: all-reduce the per-position maxima, then the lowest rank holding
the maximum wins; k > 1: all-gather every rank's top-k candidates and keep the global top
k), and keeps the local entries among them: exactly the single-process mask of the
concatenated batch, ties included (the lowest flat index over the sparse dims wins, as in
`topk_mask`). Without a process group (or with one process) it is `topk_mask`. The queries
of the process group it needs (`is_distributed`, `rank`, `world_size`, `comm_device`) live
here, the lowest layer; `gksparse.training.distributed` builds the rest on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from .sparsity import SPARSITY, Steps, _normalize_dims, keep_winners, topk_mask, winner_mask


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the active group, 0 without one."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes in the active group, 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


def comm_device() -> torch.device:
    """Where the tensors of collectives live: this process's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _count(m: int) -> int:
    """The sum of `m` over all ranks."""
    total = torch.tensor([m], dtype=torch.float64, device=comm_device())
    dist.all_reduce(total)
    return int(total.item())


def global_topk_mask(scores: torch.Tensor, k: int, dims: int | Sequence[int]) -> torch.Tensor:
    """`topk_mask(scores, k, dims)` of the global batch: this rank's part of the mask.

    scores: this rank's shard, the global batch split along dim 0, which `dims` must hold;
    every rank calls this with the same `k`, `dims` and the same shape beyond dim 0. Marks
    the entries among the `k` largest over `dims` of all ranks' shards concatenated in rank
    order (`k` clipped to their count): exactly `topk_mask` of the concatenated batch, whose
    rule for equal values is the lowest flat index over `dims`. Dim 0 is the outermost of
    `dims`, so that flat order is rank-major: ties go to the lower rank, then to the lower
    local flat index. For `k = 1` this is the argmax of the concatenated batch. Returns a
    bool tensor shaped like `scores`.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k}): it is the number of winners kept.")
    ndim = scores.ndim
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    dims = tuple(sorted({d % ndim for d in dims}))
    if 0 not in dims:
        raise ValueError(f"dims {dims} must include the batch dim 0, which is split over ranks.")
    if not is_distributed():
        return topk_mask(scores, k, dims)
    rest = [d for d in range(ndim) if d not in dims]
    perm = [*dims, *rest]
    moved = scores.detach().permute(perm)
    m = moved.shape[: len(dims)].numel()
    # (M, R): row i is local flat index i over `dims` (ascending, row-major), the order ties
    # are broken in; fp32 holds bf16 / fp16 exactly, fp64 stays fp64 (no new ties)
    dtype = torch.promote_types(scores.dtype, torch.float32)
    flat = moved.reshape(m, moved.shape[len(dims) :].numel()).to(dtype)
    mask = _global_argmax(flat) if k == 1 else _global_topk(flat, k)
    inverse = torch.argsort(torch.tensor(perm)).tolist()
    return mask.reshape(moved.shape).permute(inverse)


def _global_argmax(flat: torch.Tensor) -> torch.Tensor:
    """`(M, R)` local candidates -> `(M, R)` bool: one winner per column over all ranks."""
    index = flat.argmax(dim=0, keepdim=True)  # (1, R): the first of any local ties
    local_max = flat.gather(0, index)[0]
    global_max = local_max.to(comm_device(), copy=True)
    dist.all_reduce(global_max, op=dist.ReduceOp.MAX)
    global_max = global_max.to(flat.device)
    me, world = rank(), world_size()
    owner = torch.where(local_max == global_max, me, world).to(comm_device())
    dist.all_reduce(owner, op=dist.ReduceOp.MIN)  # the lowest rank holding the maximum
    mine = (owner.to(flat.device) == me).unsqueeze(0)
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(0, index, mine)


def _global_topk(flat: torch.Tensor, k: int) -> torch.Tensor:
    """`(M, R)` local candidates -> `(M, R)` bool: the `k` largest per column over all ranks,
    of equal values the first in global flat order (rank-major, then local row order)."""
    m, r = flat.shape
    count = _count(m)
    if k >= count:
        return torch.ones_like(flat, dtype=torch.bool)
    kk = min(k, m)
    top = flat.topk(kk, dim=0).values  # (kk, R), largest first
    if kk < k:
        top = torch.cat([top, top.new_full((k - kk, r), -torch.inf)])
    parts = [torch.empty(k, r, dtype=flat.dtype, device=comm_device()) for _ in range(world_size())]
    dist.all_gather(parts, top.to(comm_device()))
    gathered = torch.stack(parts).to(flat.device)  # (W, k, R): every rank's top k
    threshold = gathered.flatten(0, 1).topk(k, dim=0).values[-1]  # (R,): the k-th largest
    greater = (gathered > threshold).sum(dim=(0, 1))  # all of them win
    # A rank's ties are counted among its top k only, which is enough: a rank with more ties
    # than that has g values above the threshold and k - g >= need ties in its top k, so it
    # takes every place left before any later rank.
    ties = (gathered == threshold).sum(dim=1)  # (W, R)
    need = k - greater  # places left for ties, filled in global flat order: lower ranks first
    me = rank()
    mine = (need - ties[:me].sum(dim=0)).clamp(min=0).minimum(ties[me])
    equal = flat == threshold
    order = equal.cumsum(dim=0, dtype=torch.int32)  # 1, 2, ... at the local ties, row order
    return (flat > threshold) | (equal & (order <= mine))


def global_topk(fast: bool = True):
    """A `topk_mask` for `sparse_chain` whose steps over dim 0 (the batch, lifetime) rank over
    every rank's shard (`global_topk_mask`); the other steps (spatial) stay local."""

    def topk(scores: torch.Tensor, k: int, dims: int | Sequence[int]) -> torch.Tensor:
        if 0 in _normalize_dims(dims, scores.ndim):
            return global_topk_mask(scores, k, dims)
        return topk_mask(scores, k, dims, fast=fast)

    return topk


def sparse_code(
    x: torch.Tensor,
    sparsity: str,
    steps: Steps,
    groups: int = 1,
    *,
    global_batch: bool = False,
    fast: bool = True,
) -> torch.Tensor:
    """The winner-take-all code of a video code `x` `(N, T, C, H, W)`: `x` with what
    `winners` (same arguments) drops set to 0. Returns `x`'s shape; 'none' returns `x`."""
    keep = winners(x, sparsity, steps, groups, global_batch=global_batch, fast=fast)
    return keep_winners(x, keep, sparsity)


def winners(
    x: torch.Tensor,
    sparsity: str,
    steps: Steps,
    groups: int = 1,
    *,
    global_batch: bool = False,
    fast: bool = True,
) -> torch.Tensor | None:
    """The keep mask of the winner-take-all code of a video code `x` `(N, T, C, H, W)`
    (groups of channels at dim 2): `winner_mask` of the sparsity kind ('none', 'plain' or
    'group'), ranked over the global batch where `global_batch` and a process group is
    active, else over this process's `x`; `fast` as `topk_mask`'s. Returns bool
    `(N, T, C, H, W)` for 'plain', `(N, T, groups, H, W)` for 'group' (`keep_winners`
    applies it), None for 'none' (nothing dropped)."""
    if sparsity == "none":
        return None
    if sparsity not in SPARSITY:
        raise ValueError(f"unknown sparsity {sparsity!r}; use none, {', '.join(SPARSITY)}.")
    topk = global_topk(fast) if global_batch and is_distributed() else None
    return winner_mask(x, sparsity, steps, groups, 2, topk=topk, fast=fast)
