"""The k = 1 fast path of the sparsity operators against their general top-k path.

What it measures: `ksparse` and `group_ksparse` (gksparse.sparsity) with `k = 1`, once with
`fast=True` (the default: the argmax, one winner, no sort) and once with
`fast=False` (permute, flatten, `topk`, scatter the mask, permute back), on relu'd random
activations shaped like the code of the paper's three configurations, `(N, T, F, H, W)`:

    mnistrotated    30 x 36 x  64 x 14 x 14, 16 groups
    cifar10scanned  30 x  9 x 256 x 16 x 16, 64 groups
    coil100         10 x 72 x 128 x 32 x 32, 32 groups

for plain and group sparsity, spatial (winners over H, W) and lifetime (winners over N, T).
`fwd` is the operator's forward pass on an input that requires grad (as in pretraining);
`bwd` is `out.backward(grad)` alone: in both paths a multiply by the same constant mask, so
its ratio should be ~1 and shows the noise level. Each time is the median of `--repeats`
runs after one warm-up run, fast and general alternating, all in this one process, so the
ratio `general / fast` compares like with like.

Memory: on this machine (a VM) touching freshly mapped pages is slow, and by default glibc
hands large freed blocks back to the OS, so every large allocation page-faults afresh; that
cost (tens of ms per 100 MB) can dwarf the operators themselves. By default the bench asks
glibc to keep freed memory (`gksparse.runtime.keep_freed_memory`, as training does), so the
times are the operators' own;
`--default-malloc` measures with the allocator as it is, page faults included.

`ties` counts output entries where the two paths differ (checked before timing). The paths
agree except on exact ties of the maximum: there each keeps one of the tied entries, not
necessarily the same one (random float32 activations of coil100's size do hold such ties).

    python bench/sparsity.py            # the full run, 1-2 minutes on 2 CPU cores
    python bench/sparsity.py --quick    # a smoke run: batch of 2 videos, one repeat
    python bench/sparsity.py --default-malloc   # page faults of fresh allocations included
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gksparse.runtime import keep_freed_memory
from gksparse.sparsity import group_ksparse, ksparse


@dataclass(frozen=True)
class Config:
    name: str
    n: int
    t: int
    f: int
    h: int
    w: int
    groups: int


CONFIGS = (
    Config("mnistrotated", 30, 36, 64, 14, 14, 16),
    Config("cifar10scanned", 30, 9, 256, 16, 16, 64),
    Config("coil100", 10, 72, 128, 32, 32, 32),
)
AXES = {"spatial": (3, 4), "lifetime": (0, 1)}  # on (N, T, F, H, W)
CHANNEL_DIM = 2

Op = Callable[[torch.Tensor, bool], torch.Tensor]


def make_op(kind: str, dims: tuple[int, ...], groups: int) -> Op:
    """The operator under test as `op(x, fast)`."""
    if kind == "plain":
        return lambda x, fast: ksparse(x, 1, dims, fast=fast)
    return lambda x, fast: group_ksparse(x, groups, 1, dims, CHANNEL_DIM, fast=fast)


def forward_seconds(op: Op, x: torch.Tensor, fast: bool) -> float:
    start = time.perf_counter()
    out = op(x, fast)
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def backward_seconds(op: Op, x: torch.Tensor, grad: torch.Tensor, fast: bool) -> float:
    x.grad = None
    out = op(x, fast)
    start = time.perf_counter()
    out.backward(grad)
    return time.perf_counter() - start


def tie_differences(op: Op, x: torch.Tensor) -> int:
    """Entries where the two paths differ; only exact ties of the maximum may cause them.

    With tied maxima both paths keep one winner, possibly different ones: the kept entries
    may differ, their number and values may not.
    """
    with torch.no_grad():
        fast, general = op(x, True), op(x, False)
        diff = fast != general
        if not diff.any():
            return 0
        if (fast != 0).sum() != (general != 0).sum() or not torch.equal(
            fast.flatten().sort().values, general.flatten().sort().values
        ):
            raise AssertionError("the fast and general paths keep different winners' values")
        return int(diff.sum())


def bench(configs: tuple[Config, ...], repeats: int, batch: int | None) -> list[dict[str, object]]:
    """Time every case; fast and general runs alternate, so drifting load hits both alike."""
    rows: list[dict[str, object]] = []
    for c in configs:
        n = batch or c.n
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c.t, c.f, c.h, c.w, generator=g).relu_().requires_grad_(True)
        grad = torch.randn(x.shape, generator=g)
        for kind in ("plain", "group"):
            for axes, dims in AXES.items():
                op = make_op(kind, dims, c.groups)
                ties = tie_differences(op, x)
                times: dict[str, list[float]] = {}
                for i in range(repeats + 1):  # run 0 is the warm-up
                    for fast, label in ((True, "fast"), (False, "general")):
                        fwd = forward_seconds(op, x, fast)
                        bwd = backward_seconds(op, x, grad, fast)
                        if i:
                            times.setdefault(f"fwd_{label}", []).append(fwd)
                            times.setdefault(f"bwd_{label}", []).append(bwd)
                row: dict[str, object] = {
                    "config": c.name,
                    "shape": "x".join(map(str, (n, c.t, c.f, c.h, c.w))),
                    "op": kind,
                    "axes": axes,
                    "ties": ties,
                    **{k: statistics.median(v) for k, v in times.items()},
                }
                rows.append(row)
                print_row(row)
        del x, grad
    return rows


HEADER = (
    f"{'config':<15} {'shape':<18} {'op':<6} {'axes':<9}"
    f"{'fwd fast':>10} {'fwd gen':>10} {'ratio':>7}"
    f"{'bwd fast':>10} {'bwd gen':>10} {'ratio':>7}{'ties':>6}"
)


def print_row(row: dict[str, object]) -> None:
    ff, fg = float(row["fwd_fast"]), float(row["fwd_general"])  # type: ignore[arg-type]
    bf, bg = float(row["bwd_fast"]), float(row["bwd_general"])  # type: ignore[arg-type]
    print(
        f"{row['config']:<15} {row['shape']:<18} {row['op']:<6} {row['axes']:<9}"
        f"{ff * 1e3:>8.1f}ms {fg * 1e3:>8.1f}ms {fg / ff:>6.2f}x"
        f"{bf * 1e3:>8.1f}ms {bg * 1e3:>8.1f}ms {bg / bf:>6.2f}x{row['ties']:>6}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 videos, 1 repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as it is (large allocations page-fault every time)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = False if args.default_malloc else keep_freed_memory()
    repeats = 1 if args.quick else args.repeats
    batch = 2 if args.quick else None
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, k = 1, "
        f"median of {repeats} after 1 warm-up; ratio = general / fast (> 1: fast path wins); "
        f"allocator: {'keeps freed memory' if kept else 'default (page faults included)'}"
    )
    print(HEADER)
    start = time.perf_counter()
    bench(CONFIGS, repeats, batch)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
