"""Multi-process training: the process group, rank helpers, collectives and DDP.

Started by `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
`setup` joins the process group: gloo on the CPU, nccl on CUDA (one GPU per process). Without
torchrun, or with one process, every helper here is a no-op and the code runs as before.

The global lifetime step (winners over the whole global batch) is `gksparse.ops.lifetime`.

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

from ..ops.lifetime import comm_device as _comm_device
from ..ops.lifetime import is_distributed, rank, world_size
from .runtime import default_device

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
            "torchrun (e.g. torchrun --nproc_per_node=2 -m gksparse.run mnistrotated with ...)."
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
    return default_device(device).type == "cuda"


def is_main() -> bool:
    """Whether this process writes records, checkpoints and pictures (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """`device` for this process: with a process group on CUDA, this process's own GPU."""
    if device.type == "cuda" and is_distributed() and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


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
