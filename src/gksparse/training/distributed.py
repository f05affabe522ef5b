"""Multi-process training: the process group, rank helpers, global lifetime sparsity and DDP.

Started by `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
`setup` joins the process group: gloo on the CPU, nccl on CUDA (one GPU per process). Without
torchrun, or with one process, every helper here is a no-op and the code runs as before.

Lifetime sparsity (METHOD.md section 2) ranks over the whole global mini-batch, of which
each process holds a shard along dim 0. `global_sparse_chain` finds the global winners with
small collectives (k = 1: all-reduce the per-position maxima, then the lowest rank holding
the maximum wins; k > 1: all-gather every rank's top-k candidates and keep the global top
k), and keeps the local entries among them: exactly the single-process mask of the
concatenated batch, ties included (the lowest flat index over the sparse dims wins, as in
`topk_mask`). The mask is a constant for autograd, so the gradient flows through the local
kept entries only. A model uses it when asked (`VideoModel.sparsify(global_lifetime=True)`,
the protocol's `global_lifetime=True`); otherwise each rank ranks its own shard, as the
original code did.

`wrap`, `share_shuffling` and `weigh_shard` are what `train.fit` needs of DistributedDataParallel:
the model wrapped, one shuffled order for all ranks, and each rank's loss weighted so that the
averaged gradient is the gradient of the whole global batch's loss.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..ops.sparsity import (
    Steps,
    chain_keep,
    check_group_steps,
    group_scores,
    keep_groups,
    topk_mask,
)

T = TypeVar("T")


# -- the process group --------------------------------------------------------------------
def env_rank() -> int:
    """This process's rank as torchrun set it (`RANK`), 0 without torchrun; no group needed."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """The number of processes as torchrun set it (`WORLD_SIZE`), 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group torchrun describes, once; True when running with > 1 process.

    The backend is nccl when `device` is CUDA (None: CUDA when available), gloo otherwise;
    with nccl every process uses the GPU `cuda:LOCAL_RANK`. A no-op (False) without torchrun
    or with `WORLD_SIZE=1`, and when the group is already initialised.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run one process.")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not; start the processes with "
            "torchrun (e.g. torchrun --nproc_per_node=2 experiments/mnistrotated.py with ...)."
        )
    cuda = _is_cuda(device)
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return True


def cleanup() -> None:
    """Leave the process group (if this process joined one).

    Waits (at most a minute) for the other ranks first: gloo aborts a process that tears
    its group down while a peer still talks to it ("terminate called without an active
    exception"). A rank that failed is not waited for longer than that.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    except RuntimeError:
        pass  # a peer is gone: nothing left to wait for
    dist.destroy_process_group()


def _is_cuda(device: str | torch.device | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the active group, 0 without one."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes in the active group, 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes records, checkpoints and pictures (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """`device` for this process: with a process group on CUDA, this process's own GPU."""
    if device.type == "cuda" and is_distributed() and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _comm_device() -> torch.device:
    """Where the tensors of collectives live: this process's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- collectives on plain values ------------------------------------------------------------
def barrier() -> None:
    """Wait until every process reaches this point (no-op without a group)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """`obj` of rank `src` on every rank (pickled); unchanged without a group."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order (pickled); `[obj]` without a group."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of `values` over all ranks, in float64; unchanged without a group."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def run_on_main(fn: Callable[[], T]) -> T:
    """`fn()` computed on rank 0 only, its result broadcast to every rank (pickled).

    If `fn` raises on rank 0, rank 0 re-raises it and the other ranks raise a RuntimeError
    naming it, instead of waiting for a result that never comes.
    """
    if not is_distributed():
        return fn()
    if is_main():
        try:
            result = fn()
        except Exception as e:
            broadcast_object((None, f"{type(e).__name__}: {e}"))
            raise
        broadcast_object((result, None))
        return result
    result, error = broadcast_object((None, None))
    if error is not None:
        raise RuntimeError(f"rank 0 failed ({error}).")
    return result


@contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (e.g. filling a data cache once).

    If the block raises on rank 0, the other ranks raise a RuntimeError naming the error.
    """
    if not is_distributed():
        yield
        return
    if is_main():
        try:
            yield
        except Exception as e:
            broadcast_object(f"{type(e).__name__}: {e}")
            raise
        broadcast_object(None)
    else:
        error = broadcast_object(None)
        if error is not None:
            raise RuntimeError(f"rank 0 failed ({error}).")
        yield


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """`[start, stop)` of rank `rank`'s contiguous share of `n` items split among `world`.

    The shares differ by at most one item, the first `n % world` ranks taking one more, and
    concatenated in rank order they are the `n` items in order.
    """
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


# -- global lifetime sparsity -------------------------------------------------------------
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
    global_max = local_max.to(_comm_device(), copy=True)
    dist.all_reduce(global_max, op=dist.ReduceOp.MAX)
    global_max = global_max.to(flat.device)
    me, world = rank(), world_size()
    owner = torch.where(local_max == global_max, me, world).to(_comm_device())
    dist.all_reduce(owner, op=dist.ReduceOp.MIN)  # the lowest rank holding the maximum
    mine = (owner.to(flat.device) == me).unsqueeze(0)
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(0, index, mine)


def _global_topk(flat: torch.Tensor, k: int) -> torch.Tensor:
    """`(M, R)` local candidates -> `(M, R)` bool: the `k` largest per column over all ranks,
    of equal values the first in global flat order (rank-major, then local row order)."""
    m, r = flat.shape
    count = int(all_reduce_sum([m])[0])
    if k >= count:
        return torch.ones_like(flat, dtype=torch.bool)
    kk = min(k, m)
    top = flat.topk(kk, dim=0).values  # (kk, R), largest first
    if kk < k:
        top = torch.cat([top, top.new_full((k - kk, r), -torch.inf)])
    parts = [
        torch.empty(k, r, dtype=flat.dtype, device=_comm_device()) for _ in range(world_size())
    ]
    dist.all_gather(parts, top.to(_comm_device()))
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


def global_sparse_chain(
    x: torch.Tensor,
    steps: Steps,
    sparsity: str = "plain",
    groups: int = 1,
    channel_dim: int = 2,
    *,
    fast: bool = True,
) -> torch.Tensor:
    """`ksparse_chain` ('plain') or `group_ksparse_chain` ('group') of the global batch.

    x: this rank's shard `(n, ...)` of the global batch (split along dim 0). Steps whose dims
    include dim 0 (lifetime: `(0, 1)`) rank over all ranks with `global_topk_mask`; the other
    steps (spatial) are local (`topk_mask`, `fast` as there). Returns this rank's part of the
    result, shaped like `x`; the gradient flows through the local kept entries only.
    """
    if sparsity not in ("plain", "group"):
        raise ValueError(f"unknown sparsity {sparsity!r}; use 'plain' or 'group'.")
    channel_dim %= x.ndim

    def topk(scores: torch.Tensor, k: int, dims: int | Sequence[int]) -> torch.Tensor:
        if 0 in [d % x.ndim for d in ((dims,) if isinstance(dims, int) else dims)]:
            return global_topk_mask(scores, k, dims)  # over the batch: every rank's shard
        return topk_mask(scores, k, dims, fast=fast)

    if sparsity == "plain":
        keep = chain_keep(x.detach(), steps, topk)
        return x if keep is None else torch.where(keep, x, 0.0)
    check_group_steps(steps, channel_dim, x.ndim)
    keep = chain_keep(group_scores(x, groups, channel_dim), steps, topk)
    return x if keep is None else keep_groups(x, keep, channel_dim)


# -- DistributedDataParallel --------------------------------------------------------------------
def check_global_batch(batch_size: int) -> None:
    """Raise a ValueError unless the global batch splits evenly over the processes."""
    world = world_size()
    if batch_size % world:
        raise ValueError(
            f"batch_size={batch_size} is the global batch, split evenly over {world} "
            f"processes; choose a multiple of {world}."
        )


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel under a process group, else `module` itself."""
    if not is_distributed():
        return module
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def share_shuffling(generator: torch.Generator, own_rng: bool) -> None:
    """Before a stage under a process group: every rank shuffles with rank 0's `generator`,
    and unless `own_rng` (each rank got back its own saved RNG) each rank draws its dropout
    from a seed of its own (the same one would repeat its noise on every rank)."""
    if not is_distributed():
        return
    generator.set_state(broadcast_object(generator.get_state()))
    if not own_rng:
        torch.manual_seed(int(torch.randint(2**62, ()).item()) + rank())


def weigh_shard(local: torch.Tensor, weight: float) -> tuple[torch.Tensor, float]:
    """This rank's loss to backpropagate, and the global batch's loss (the same on all ranks).

    local: the mean loss of this rank's share of a global batch; weight: what that mean
    divides by (`losses.loss_weight`; 0 for a padded stand-in of an empty share). Scaled by
    `W * w_r / sum(w)`, whose DDP average over the W ranks is the gradient of the global
    batch's mean.
    """
    weighted = float(local.detach()) * weight if weight else 0.0
    total, weights = all_reduce_sum([weighted, weight])
    value = total / weights if weights else math.nan
    return local * (world_size() * weight / weights if weights else 0.0), value
