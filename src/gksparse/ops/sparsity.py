"""Winner-take-all sparsity operators (METHOD.md section 2), pure tensor functions.

All operators keep the `k` largest values (by value, not magnitude) over the dims in
`dims`, separately for every index of the other dims, and zero the rest. Among equal values
the lowest flat index over `dims` wins, as in the reference's `tf.nn.top_k` (`topk_mask`).
The keep/drop mask is a constant for autograd: gradient flows only through the kept entries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

Steps = Sequence[tuple[int, int | Sequence[int]]]  # ((k, dims), ...): successive WTA steps

SPARSITY = ("plain", "group")  # the kinds of WTA step (METHOD.md section 2)
EPS = 1e-7  # inside the square root of a group norm, as the reference's `n_p`
SUM_BY_CHANNEL = 4  # groups of up to 4 channels: `group_scores` adds channel by channel


def _normalize_dims(dims: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if not dims:
        raise ValueError("dims must name at least one dimension to select winners over.")
    out = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise ValueError(f"dim {d} is out of range for a tensor of rank {ndim}.")
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"dims {tuple(dims)} name the same dimension twice.")
    return tuple(sorted(out))


def _channel_dim(channel_dim: int, ndim: int) -> int:
    if not -ndim <= channel_dim < ndim:
        raise ValueError(f"channel_dim {channel_dim} is out of range for a tensor of rank {ndim}.")
    return channel_dim % ndim


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k}): it is the number of winners kept.")


def topk_mask(
    scores: torch.Tensor, k: int, dims: int | Sequence[int], *, fast: bool = True
) -> torch.Tensor:
    """Boolean mask of the `k` largest `scores` over `dims`, for every index of the other dims.

    `k` is clipped to the number of values over `dims`. Exactly `min(k, count)` entries are
    marked. Among equal values the lowest flat index over `dims` wins, as in `tf.nn.top_k`
    (METHOD.md 5.1): the dims are flattened in ascending order, so for dims (0, 1) of
    `(N, T, ...)` the flat index is `n * T + t`, for (3, 4) of `(..., H, W)` it is `h * W + w`.
    Black backgrounds and ReLU zeros tie exactly, so the rule decides what is kept. For
    `k = 1` the winner is the argmax, the first maximum (one reduction, no sort); for `k > 1`,
    and with `fast=False`, see `_first_topk`. The same on every device, deterministic.
    Returns a bool tensor shaped like `scores`; it carries no gradient.
    """
    _check_k(k)
    dims = _normalize_dims(dims, scores.ndim)
    scores = scores.detach()
    count = 1
    for d in dims:
        count *= scores.shape[d]
    if k >= count:
        return torch.ones_like(scores, dtype=torch.bool)
    if k == 1 and fast and dims == tuple(range(dims[0], dims[-1] + 1)):
        # consecutive dims: flatten them in place and mark the argmax, the first of any ties
        flat = scores.flatten(dims[0], dims[-1])
        index = flat.argmax(dim=dims[0], keepdim=True)
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(dims[0], index, True)
        return mask.unflatten(dims[0], [scores.shape[d] for d in dims])
    # General path: move `dims` last (in ascending order: the flat order), flatten, select.
    rest = [d for d in range(scores.ndim) if d not in dims]
    perm = rest + list(dims)
    moved = scores.permute(perm)
    flat = moved.reshape(*moved.shape[: len(rest)], count)
    if k == 1 and fast:
        index = flat.argmax(dim=-1, keepdim=True)
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, index, True)
    else:
        mask = _first_topk(flat, k)
    return mask.reshape(moved.shape).permute(torch.argsort(torch.tensor(perm)).tolist())


def _first_topk(flat: torch.Tensor, k: int) -> torch.Tensor:
    """`(..., count)` -> bool `(..., count)`: the `k` largest of every row, ties to the first.

    The k-th largest value is the threshold: every entry above it wins, and the first
    entries equal to it (in the row's order) fill the remaining places. `k < count`.
    """
    # torch.topk picks among tied entries in no documented order, but the k largest VALUES
    # are the same whichever it picked: their minimum is the threshold, and every entry above
    # it is among the picks, so the picks above it win and the others count the places left
    # for ties. The first tied entries are found with a running count, one pass, not a sort
    # of the row (an integer scan: exact and deterministic on CUDA too).
    values, index = flat.topk(k, dim=-1, sorted=False)
    threshold = values.amin(dim=-1, keepdim=True)
    above = values > threshold  # (..., k)
    equal = flat == threshold
    order = equal.cumsum(dim=-1, dtype=_count_dtype(flat.shape[-1]))  # 1, 2, ... at the ties
    places = (k - above.sum(dim=-1, keepdim=True)).to(order.dtype)
    keep = equal & (order <= places)
    # mark the picks above the threshold (a tied pick keeps its own mark): no compare pass
    return keep.scatter_(-1, index, above | keep.gather(-1, index))


def _count_dtype(count: int) -> torch.dtype:
    """The smallest integer dtype holding 0..count (a running count of a row's ties)."""
    if count < 2**8:
        return torch.uint8
    return torch.int16 if count < 2**15 else torch.int32 if count < 2**31 else torch.int64


def ksparse(
    x: torch.Tensor, k: int, dims: int | Sequence[int], *, fast: bool = True
) -> torch.Tensor:
    """Keep the `k` largest values of `x` over `dims` (flattened together), zero the rest.

    x: any shape. Returns a tensor shaped like `x`. Example: for a code `(N, T, C, H, W)`,
    `dims=(3, 4)` is spatial sparsity (per sample, frame and channel) and `dims=(0, 1)` is
    lifetime sparsity (per channel and position, across the batch and its frames). Ties go
    to the lowest flat index over `dims` (`topk_mask`).
    """
    return x * topk_mask(x, k, dims, fast=fast)


def group_norms(x: torch.Tensor, groups: int, channel_dim: int) -> torch.Tensor:
    """L2 norm of each of `groups` contiguous channel groups: `sqrt(sum of squares + 1e-7)`.

    x: `(..., C, ...)` with `C` at `channel_dim`. Returns `(..., groups, ...)`.
    """
    channel_dim = _channel_dim(channel_dim, x.ndim)
    c = x.shape[channel_dim]
    if groups < 1 or c % groups:
        raise ValueError(
            f"groups={groups} must divide the {c} channels; choose a divisor of {c} "
            "(e.g. filters=64 with groups=16)."
        )
    shape = (*x.shape[:channel_dim], groups, c // groups, *x.shape[channel_dim + 1 :])
    return (x.reshape(shape).square().sum(dim=channel_dim + 1) + EPS).sqrt()


def group_ksparse(
    x: torch.Tensor,
    groups: int,
    k: int,
    dims: int | Sequence[int],
    channel_dim: int,
    *,
    fast: bool = True,
) -> torch.Tensor:
    """Group k-sparsity: keep whole channel groups whose norms are among the `k` largest.

    x: `(..., C, ...)` with `C` at `channel_dim`, split into `groups` contiguous groups.
    For every group and every index of the dims not in `dims`, the `k` largest group norms
    over `dims` win (equal norms: the lowest flat index over `dims`, as in `topk_mask`), and
    all channels of a winning group are kept. Returns `x`'s shape.
    """
    _check_k(k)
    channel_dim = _channel_dim(channel_dim, x.ndim)
    dims = _normalize_dims(dims, x.ndim)
    if channel_dim in dims:
        raise ValueError(
            f"dims {dims} contain the channel dim {channel_dim}: groups are chosen per "
            "channel group, so select over the other dims."
        )
    norms = group_norms(x.detach(), groups, channel_dim)
    keep = topk_mask(norms, k, dims, fast=fast).unsqueeze(channel_dim + 1)
    c = x.shape[channel_dim]
    grouped = x.reshape(*x.shape[:channel_dim], groups, c // groups, *x.shape[channel_dim + 1 :])
    return (grouped * keep).reshape(x.shape)


TopkMask = Callable[[torch.Tensor, int, "int | Sequence[int]"], torch.Tensor]


def chain_keep(scores: torch.Tensor, steps: Steps, topk: TopkMask) -> torch.Tensor | None:
    """The keep mask of successive WTA steps on `scores`: bool, shaped like `scores`.

    Each step `(k, dims)` ranks the scores the previous steps left (dropped entries count as
    zeros, tied with real zeros) with `topk(scores, k, dims)`; None when `steps` is empty.
    """
    keep = None
    for i, (k, dims) in enumerate(steps):
        mask = topk(scores, k, dims)
        keep = mask if keep is None else keep & mask
        if i + 1 < len(steps):
            scores = torch.where(mask, scores, 0.0)  # no bool-to-float copy
    return keep


def ksparse_chain(x: torch.Tensor, steps: Steps, *, fast: bool = True) -> torch.Tensor:
    """`ksparse` applied once per `(k, dims)` of `steps`, in order, with one final multiply.

    Same result as `for k, dims in steps: x = ksparse(x, k, dims)`, ties included: each step
    ranks the values the previous steps left (dropped entries count as zeros, tied with the
    zeros of `x`), and the masks are combined so that the code is written once.
    """
    return sparse_chain(x, "plain", steps, fast=fast)


def group_scores(x: torch.Tensor, groups: int, channel_dim: int) -> torch.Tensor:
    """Sums of squares of the channel groups in fp32: ordered as `group_norms`, no sqrt.

    x: `(..., C, ...)` with `C` at `channel_dim`. Returns `(..., groups, ...)`, no gradient.
    """
    channel_dim = _channel_dim(channel_dim, x.ndim)
    c = x.shape[channel_dim]
    if groups < 1 or c % groups:
        group_norms(x, groups, channel_dim)  # raises the error with its message
    grouped = x.detach().unflatten(channel_dim, (groups, c // groups))
    if c // groups > SUM_BY_CHANNEL:
        return grouped.float().square().sum(dim=channel_dim + 1)
    # A short group: add the channels' squares one channel at a time, in the order `sum`
    # adds up to 4 of them (the same bits), with no full-size fp32 copy and no reduction
    # over an innermost run of C/G (2.5 to 3x faster for 4 channels a group, fp32 and bf16),
    # into contiguous scores whatever x's layout (the top-k reductions run 2-3x faster).
    channels = grouped.unbind(channel_dim + 1)
    scores = torch.empty(channels[0].shape, device=x.device)
    square = torch.empty_like(scores)
    torch.square(channels[0].float(), out=scores)
    for channel in channels[1:]:
        scores.add_(torch.square(channel.float(), out=square))
    return scores


def keep_groups(x: torch.Tensor, keep: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """`x` with the channels of the groups `keep` drops set to 0.

    x: `(..., C, ...)`; keep: bool `(..., G, ...)`, G groups of C/G contiguous channels at
    `channel_dim`. Returns `x`'s shape (and its memory layout for channels-last frames).
    """
    c, groups = x.shape[channel_dim], keep.shape[channel_dim]
    if x.stride(channel_dim) == 1 and x.ndim > channel_dim + 1:
        # channels innermost (channels-last frames): a mask broadcast over the C/G channels
        # of a group would make every inner loop C/G long, so spell it out per channel, in
        # x's layout: channel dim moved last, groups repeated, moved back.
        last = _channel_mask(keep.movedim(channel_dim, -1), c // groups)
        return torch.where(last.movedim(-1, channel_dim), x, 0.0)
    grouped = x.unflatten(channel_dim, (groups, c // groups))
    kept = torch.where(keep.unsqueeze(channel_dim + 1), grouped, 0.0)
    return kept.flatten(channel_dim, channel_dim + 1)


# A group of 2, 4 or 8 channels as one integer word whose bytes are all 0 or all 1 (bools).
_WORDS = {
    2: (torch.int16, 0x0101),
    4: (torch.int32, 0x01010101),
    8: (torch.int64, 0x0101010101010101),
}


def _channel_mask(keep: torch.Tensor, per_group: int) -> torch.Tensor:
    """bool `(..., G)` -> `(..., G * per_group)`, each group's flag repeated per channel."""
    if per_group not in _WORDS:
        return keep.repeat_interleave(per_group, dim=-1)
    # each flag written as one word of `per_group` bytes 0 or 1, read back as bools: half
    # the time of repeat_interleave, whose copy moves one byte at a time
    dtype, ones = _WORDS[per_group]
    words = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(keep, ones)
    return words.view(torch.bool)


def check_group_steps(steps: Steps, channel_dim: int, ndim: int) -> None:
    """Raise a ValueError for a step with k < 1 or whose dims hold the channel dim."""
    for k, dims in steps:
        _check_k(k)
        if channel_dim in _normalize_dims(dims, ndim):
            raise ValueError(
                f"dims {dims} contain the channel dim {channel_dim}: groups are chosen per "
                "channel group, so select over the other dims."
            )


def group_ksparse_chain(
    x: torch.Tensor, groups: int, steps: Steps, channel_dim: int, *, fast: bool = True
) -> torch.Tensor:
    """`group_ksparse` applied once per `(k, dims)` of `steps`, in order, computed at once.

    Same result as `for k, dims in steps: x = group_ksparse(x, groups, k, dims, channel_dim)`,
    ties included (the lowest flat index wins): the group norms are computed once, in fp32
    (bf16 inputs too), a dropped group counts as a zero group, the smallest norm, in later
    steps, and the code is written once. Squared norms rank as the norms do (except where
    two squared norms a few ulps apart round to the same norm, which `group_ksparse` ties).
    """
    return sparse_chain(x, "group", steps, groups, channel_dim, fast=fast)


def sparse_chain(
    x: torch.Tensor,
    sparsity: str,
    steps: Steps,
    groups: int = 1,
    channel_dim: int = 2,
    *,
    topk: TopkMask | None = None,
    fast: bool = True,
) -> torch.Tensor:
    """The one dispatch of the sparsity kinds: successive WTA steps of `x` by value
    ('plain', `ksparse_chain`) or by channel group norm ('group', `group_ksparse_chain`).

    x: any shape; 'group' ranks `groups` groups of contiguous channels at `channel_dim`.
    topk: how a step picks its winners (default `topk_mask` with `fast`; the global lifetime
    step passes its own, `gksparse.ops.lifetime`). Returns `x`'s shape.
    """
    keep = winner_mask(x, sparsity, steps, groups, channel_dim, topk=topk, fast=fast)
    return keep_winners(x, keep, sparsity, channel_dim)


def winner_mask(
    x: torch.Tensor,
    sparsity: str,
    steps: Steps,
    groups: int = 1,
    channel_dim: int = 2,
    *,
    topk: TopkMask | None = None,
    fast: bool = True,
) -> torch.Tensor | None:
    """The keep mask of `sparse_chain` (same arguments): bool, shaped like `x` for 'plain',
    with `groups` in place of the channels for 'group'; None when `steps` is empty."""
    topk = topk or functools.partial(topk_mask, fast=fast)
    if sparsity == "plain":
        return chain_keep(x.detach(), steps, topk)
    if sparsity != "group":
        raise ValueError(f"unknown sparsity {sparsity!r}; use {', '.join(SPARSITY)}.")
    channel_dim = _channel_dim(channel_dim, x.ndim)
    check_group_steps(steps, channel_dim, x.ndim)
    return chain_keep(group_scores(x, groups, channel_dim), steps, topk)


def keep_winners(
    x: torch.Tensor, keep: torch.Tensor | None, sparsity: str, channel_dim: int = 2
) -> torch.Tensor:
    """`x` with what `keep` (a `winner_mask` of the sparsity kind) drops set to 0."""
    if keep is None:
        return x
    if sparsity == "plain":
        return torch.where(keep, x, 0.0)  # no bool-to-float copy
    return keep_groups(x, keep, _channel_dim(channel_dim, x.ndim))
