"""The k = 1 fast path of the sparsity operators against their general top-k path, and the
cost of breaking ties as `tf.nn.top_k` does for k > 1.

What it measures: `ksparse` and `group_ksparse` (gksparse.ops.sparsity) with `k = 1`, once with
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
glibc to keep freed memory (`gksparse.training.runtime.keep_freed_memory`, as training does), so the
times are the operators' own;
`--default-malloc` measures with the allocator as it is, page faults included.

Before timing, the two paths are checked to give the same output: both keep, among equal
values, the lowest flat index over the axes (METHOD.md 5.1), so they agree on exact ties too.
`tied` counts the slices whose maximum is such a tie (where that rule decided which entry
wins): few in random activations, many in a code of black frames.

The second table is k > 1 (2, 3, 5): `topk_mask` (the k-th largest value as a threshold, the
first of the tied entries in flat order by a running count) against a plain `torch.topk`
mask (`arbitrary`: its indices scattered, ties broken in no documented order, as
`topk_mask` did before). Scores are the plain code `(N, T, F, H, W)` and the group scores
`(N, T, G, H, W)` that `group_ksparse_chain` ranks (squared group norms); `input` is `relu`
(the relu'd activations) or `chain` (after the k = 1 spatial step, the lifetime step's
input in pretraining: mostly zeros, so the k-th place is an exact tie almost everywhere).
`cost = exact / arbitrary` (> 1: what the exact rule costs).

    python bench/sparsity.py            # the full run, 2-3 minutes on 2 CPU cores
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

from gksparse.ops.sparsity import group_ksparse, ksparse, topk_mask
from gksparse.training.runtime import keep_freed_memory


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


def check_paths_agree(op: Op, x: torch.Tensor) -> None:
    """Raise unless the fast and general paths give the same output, exact ties included."""
    with torch.no_grad():
        diff = int((op(x, True) != op(x, False)).sum())
    if diff:
        raise AssertionError(f"the fast and general paths differ in {diff} entries")


def tied_slices(x: torch.Tensor, dims: tuple[int, ...]) -> int:
    """Slices over `dims` of `x` whose maximum is held by more than one entry."""
    with torch.no_grad():
        return int(((x == x.amax(dim=dims, keepdim=True)).sum(dim=dims) > 1).sum())


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
                check_paths_agree(op, x)
                scores = x if kind == "plain" else group_scores(x, c.groups)
                ties = tied_slices(scores, dims)
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
    f"{'bwd fast':>10} {'bwd gen':>10} {'ratio':>7}{'tied':>7}"
)


def print_row(row: dict[str, object]) -> None:
    ff, fg = float(row["fwd_fast"]), float(row["fwd_general"])  # type: ignore[arg-type]
    bf, bg = float(row["bwd_fast"]), float(row["bwd_general"])  # type: ignore[arg-type]
    print(
        f"{row['config']:<15} {row['shape']:<18} {row['op']:<6} {row['axes']:<9}"
        f"{ff * 1e3:>8.1f}ms {fg * 1e3:>8.1f}ms {fg / ff:>6.2f}x"
        f"{bf * 1e3:>8.1f}ms {bg * 1e3:>8.1f}ms {bg / bf:>6.2f}x{row['ties']:>7}",
        flush=True,
    )


# -- k > 1: the exact tie rule against torch.topk's arbitrary one ------------------------------
KS = (2, 3, 5)


def group_scores(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The squared group norms `(N, T, G, H, W)` that `group_ksparse_chain` ranks."""
    return x.detach().unflatten(CHANNEL_DIM, (groups, -1)).square().sum(CHANNEL_DIM + 1)


def arbitrary_topk_mask(scores: torch.Tensor, k: int, dims: tuple[int, ...]) -> torch.Tensor:
    """The k largest over `dims` by `torch.topk`'s indices: ties broken in no set order."""
    rest = [d for d in range(scores.ndim) if d not in dims]
    perm = rest + list(dims)
    moved = scores.permute(perm)
    flat = moved.reshape(*moved.shape[: len(rest)], -1)
    index = flat.topk(k, dim=-1, sorted=False).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, index, True)
    return mask.reshape(moved.shape).permute(torch.argsort(torch.tensor(perm)).tolist())


def seconds(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_ties(configs: tuple[Config, ...], repeats: int, batch: int | None) -> list[dict]:
    """Time `topk_mask` and `arbitrary_topk_mask` for k > 1, alternating, median of runs."""
    rows: list[dict] = []
    for c in configs:
        n = batch or c.n
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c.t, c.f, c.h, c.w, generator=g).relu_()
        for kind in ("plain", "group"):
            relu = x if kind == "plain" else group_scores(x, c.groups)
            inputs = {"relu": relu, "chain": relu * topk_mask(relu, 1, AXES["spatial"])}
            for axes, dims in AXES.items():
                for label, scores in inputs.items():
                    if axes == "spatial" and label == "chain":
                        continue  # the spatial step comes first
                    for k in KS:
                        times: dict[str, list[float]] = {"exact": [], "arbitrary": []}
                        for i in range(repeats + 1):  # run 0 is the warm-up
                            exact = seconds(topk_mask, scores, k, dims)
                            arbitrary = seconds(arbitrary_topk_mask, scores, k, dims)
                            if i:
                                times["exact"].append(exact)
                                times["arbitrary"].append(arbitrary)
                        row = {
                            "config": c.name,
                            "shape": "x".join(map(str, scores.shape)),
                            "axes": axes,
                            "input": label,
                            "k": k,
                            **{key: statistics.median(v) for key, v in times.items()},
                        }
                        rows.append(row)
                        print_ties_row(row)
        del x
    return rows


TIES_HEADER = (
    f"{'config':<15} {'scores':<18} {'axes':<9}{'input':<6}{'k':>3}"
    f"{'exact':>10} {'arbitrary':>10} {'cost':>7}"
)


def print_ties_row(row: dict) -> None:
    e, a = float(row["exact"]), float(row["arbitrary"])
    print(
        f"{row['config']:<15} {row['shape']:<18} {row['axes']:<9}{row['input']:<6}{row['k']:>3}"
        f"{e * 1e3:>8.1f}ms {a * 1e3:>8.1f}ms {e / a:>6.2f}x",
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
    print(
        "\nk > 1: topk_mask (ties to the lowest flat index) against torch.topk's indices "
        "(ties in no set order); cost = exact / arbitrary"
    )
    print(TIES_HEADER)
    bench_ties(CONFIGS, repeats, batch)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
