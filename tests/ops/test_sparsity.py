"""ksparse, group_ksparse, group_norms and topk_mask against hand-computed cases and the
definitions of METHOD.md section 2 (written out below as slow loops over numpy arrays)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from tensors import gen, grads_of

from gksparse.ops.sparsity import (
    EPS,
    group_ksparse,
    group_ksparse_chain,
    group_norms,
    group_scores,
    keep_groups,
    ksparse,
    ksparse_chain,
    topk_mask,
)


# -- the definitions, written as plainly as possible -------------------------------------
def ref_topk_mask(scores: np.ndarray, k: int, dims: tuple[int, ...]) -> np.ndarray:
    """For every index of the other dims, mark the k largest values over `dims` (no ties)."""
    dims = tuple(sorted(d % scores.ndim for d in dims))
    rest = [d for d in range(scores.ndim) if d not in dims]
    mask = np.zeros(scores.shape, dtype=bool)
    for outer in itertools.product(*(range(scores.shape[d]) for d in rest)):
        inner = list(itertools.product(*(range(scores.shape[d]) for d in dims)))
        full = []
        for idx in inner:
            i = [0] * scores.ndim
            for d, v in zip(rest, outer, strict=True):
                i[d] = v
            for d, v in zip(dims, idx, strict=True):
                i[d] = v
            full.append(tuple(i))
        values = np.array([scores[i] for i in full])
        order = np.argsort(-values, kind="stable")
        if k < len(order):  # the test data must not make the k-th place ambiguous
            assert values[order[k - 1]] - values[order[k]] > 1e-6, "near tie in test data"
        for j in order[:k]:
            mask[full[j]] = True
    return mask


def ref_first_topk_mask(scores: np.ndarray, k: int, dims: tuple[int, ...]) -> np.ndarray:
    """tf.nn.top_k's rule with ties: over `dims` flattened in ascending order, a stable argsort
    of -values, the first k (of equal values, the lowest flat index)."""
    dims = sorted(d % scores.ndim for d in dims)
    rest = [d for d in range(scores.ndim) if d not in dims]
    moved = np.transpose(scores, rest + dims)
    flat = moved.reshape(*moved.shape[: len(rest)], -1)
    order = np.argsort(-flat, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return np.transpose(mask.reshape(moved.shape), np.argsort(rest + dims))


def ref_first_group_mask(x: np.ndarray, groups: int, k: int, dims, channel_dim: int):
    """`ref_group_mask` with tied group norms (the lowest flat index wins)."""
    keep = ref_first_topk_mask(ref_group_norms(x, groups, channel_dim), k, dims)
    return np.repeat(keep, x.shape[channel_dim] // groups, axis=channel_dim)


def ref_group_norms(x: np.ndarray, groups: int, channel_dim: int) -> np.ndarray:
    xm = np.moveaxis(x.astype(np.float64), channel_dim, -1)
    size = xm.shape[-1] // groups
    norms = np.stack(
        [np.sqrt((xm[..., g * size : (g + 1) * size] ** 2).sum(-1) + EPS) for g in range(groups)],
        axis=-1,
    )
    return np.moveaxis(norms, -1, channel_dim)


def ref_group_mask(x: np.ndarray, groups: int, k: int, dims, channel_dim: int) -> np.ndarray:
    """The kept/dropped decision per group, repeated over that group's channels."""
    keep = ref_topk_mask(ref_group_norms(x, groups, channel_dim), k, dims)
    return np.repeat(keep, x.shape[channel_dim] // groups, axis=channel_dim)


def distinct(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random values in (-1, 1), no two equal in magnitude, no zeros (so no ties anywhere)."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    # (p + 0.25) / n * 2 - 1 for a permutation p: never 0, and x = -y has no solution
    return ((torch.randperm(n, generator=g).double() + 0.25) / n * 2 - 1).reshape(shape).float()


def uniform(*shape: int, seed: int = 0) -> torch.Tensor:
    """Uniform random values in [-1, 1): group norms without the grid's exact ties."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- hand-computed cases -----------------------------------------------------------------
def test_ksparse_small_hand_cases():
    x = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 4.0]])
    assert ksparse(x, 1, dims=1).tolist() == [[0, 3, 0], [5, 0, 0]]
    assert ksparse(x, 2, dims=1).tolist() == [[0, 3, 2], [5, 0, 4]]
    assert ksparse(x, 1, dims=0).tolist() == [[0, 3, 0], [5, 0, 4]]
    assert ksparse(x, 1, dims=(0, 1)).tolist() == [[0, 0, 0], [5, 0, 0]]
    assert ksparse(x, 3, dims=(0, 1)).tolist() == [[0, 3, 0], [5, 0, 4]]


def test_ksparse_keeps_largest_by_value_not_magnitude():
    x = torch.tensor([-5.0, 1.0, 2.0, -3.0])
    assert ksparse(x, 1, dims=0).tolist() == [0, 0, 2, 0]
    assert ksparse(x, 2, dims=0, fast=False).tolist() == [0, 1, 2, 0]


def test_group_norms_hand_case():
    x = torch.tensor([[3.0, 4.0, 0.0, 1.0], [1.0, 0.0, 2.0, 2.0]])
    expected = [[math.sqrt(25 + EPS), math.sqrt(1 + EPS)], [math.sqrt(1 + EPS), math.sqrt(8 + EPS)]]
    torch.testing.assert_close(group_norms(x, 2, channel_dim=1), torch.tensor(expected))
    # an all-zero group has norm sqrt(eps), not 0 (the eps is inside the square root)
    assert group_norms(torch.zeros(1, 4), 2, 1)[0].tolist() == pytest.approx([math.sqrt(EPS)] * 2)


def test_group_ksparse_small_hand_cases():
    # rows are positions (the dim we select over), columns are 4 channels in 2 groups
    x = torch.tensor([[3.0, 4.0, 0.0, 1.0], [1.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    # group 0 norms 5, 1, 0 -> row 0 wins; group 1 norms 1, 2.83, 3 -> row 2 wins
    assert group_ksparse(x, 2, 1, dims=0, channel_dim=1).tolist() == [
        [3, 4, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 3],
    ]
    # the decision is per group: plain ksparse would keep row 1's channel 2 (2 > 0, 0)
    assert ksparse(x, 1, dims=0)[1].tolist() == [0, 0, 2, 0]
    assert group_ksparse(x, 2, 2, dims=0, channel_dim=1, fast=False).tolist() == [
        [3, 4, 0, 0],
        [1, 0, 2, 2],
        [0, 0, 0, 3],
    ]
    # one group over all channels: the whole row with the largest norm survives
    assert group_ksparse(x, 1, 1, dims=0, channel_dim=-1).tolist() == [
        [3, 4, 0, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


# -- against the definition: any rank, any dims, k > 1, both paths -----------------------
KSPARSE_CASES = [
    ((7,), (0,)),
    ((3, 5), (1,)),
    ((3, 5), (0,)),
    ((3, 5), (0, 1)),
    ((2, 3, 4), (0, 2)),  # non-adjacent dims
    ((2, 3, 4), (-1,)),
    ((2, 3, 2, 3, 3), (3, 4)),  # spatial on (N, T, C, H, W)
    ((2, 3, 2, 3, 3), (0, 1)),  # lifetime on (N, T, C, H, W)
    ((2, 3, 2, 3, 3), (4, 1, 2)),  # unsorted dims
]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize(("shape", "dims"), KSPARSE_CASES)
def test_ksparse_matches_definition(shape, dims, k, fast):
    x = distinct(*shape, seed=len(shape) + k)
    mask = ref_topk_mask(x.numpy(), k, dims)
    out = ksparse(x, k, dims, fast=fast)
    np.testing.assert_array_equal(out.numpy(), np.where(mask, x.numpy(), 0))
    np.testing.assert_array_equal(topk_mask(x, k, dims, fast=fast).numpy(), mask)
    assert out.shape == x.shape and out.dtype == x.dtype


GROUP_CASES = [
    # shape, groups, dims, channel_dim
    ((5, 6), 3, (0,), 1),
    ((6, 5), 2, (1,), 0),  # channels first
    ((2, 4, 3, 3), 2, (2, 3), 1),
    ((2, 3, 4, 3, 3), 2, (3, 4), 2),  # spatial on (N, T, C, H, W)
    ((2, 3, 4, 3, 3), 4, (0, 1), 2),  # lifetime on (N, T, C, H, W), one channel per group
    ((2, 3, 3, 3, 6), 3, (0, 1, 2), -1),  # channels last, as in the reference
    ((3, 4, 2, 2), 1, (0, 2, 3), 1),  # one group holding all channels
]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize(("shape", "groups", "dims", "channel_dim"), GROUP_CASES)
def test_group_ksparse_matches_definition(shape, groups, dims, channel_dim, k, fast):
    x = uniform(*shape, seed=k)
    mask = ref_group_mask(x.numpy(), groups, k, dims, channel_dim)
    out = group_ksparse(x, groups, k, dims, channel_dim, fast=fast)
    np.testing.assert_array_equal(out.numpy(), np.where(mask, x.numpy(), 0))
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize(("shape", "groups", "dims", "channel_dim"), GROUP_CASES)
def test_group_norms_match_definition(shape, groups, dims, channel_dim):
    x = distinct(*shape, seed=1)
    np.testing.assert_allclose(
        group_norms(x, groups, channel_dim).numpy(),
        ref_group_norms(x.numpy(), groups, channel_dim),
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("per_group", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("nhwc", [False, True])
def test_group_scores_are_the_fp32_sums_of_squares_bit_for_bit(dtype, per_group, nhwc):
    # short groups add channel by channel: the same bits as `sum`, in every layout
    g = torch.Generator().manual_seed(per_group)
    x = torch.randn(6, 4 * per_group, 9, 7, generator=g) * torch.rand(6, 1, 9, 7, generator=g)
    x = x.to(dtype)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.unflatten(0, (2, 3))
    want = x.unflatten(2, (4, per_group)).float().square().sum(3)
    got = group_scores(x, 4, 2)
    assert got.dtype == torch.float32 and got.shape == want.shape and got.is_contiguous()
    assert torch.equal(got, want)


@pytest.mark.parametrize("per_group", [1, 2, 3, 4, 8])
def test_keep_groups_is_the_same_in_both_layouts(per_group):
    # channels-last spells the group mask out per channel (as machine words for 2, 4, 8)
    g = torch.Generator().manual_seed(per_group)
    x = torch.randn(6, 4 * per_group, 5, 7, generator=g).unflatten(0, (2, 3))
    keep = torch.rand(2, 3, 4, 5, 7, generator=g) < 0.5
    want = (x.unflatten(2, (4, per_group)) * keep.unsqueeze(3)).flatten(2, 3)
    nhwc = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (2, 3))
    for layout in (x, nhwc):
        got = keep_groups(layout, keep, 2)
        assert torch.equal(got, want)
        assert got.stride() == layout.stride()


def test_ksparse_on_non_contiguous_input():
    x = distinct(4, 3, 5, seed=3)
    xt = x.transpose(0, 2)  # (5, 3, 4), not contiguous
    assert not xt.is_contiguous()
    for fast in (True, False):
        expected = ksparse(xt.contiguous(), 2, (0, 2), fast=fast)
        torch.testing.assert_close(ksparse(xt, 2, (0, 2), fast=fast), expected)
        torch.testing.assert_close(
            group_ksparse(xt, 2, 1, (0,), 2, fast=fast),
            group_ksparse(xt.contiguous(), 2, 1, (0,), 2, fast=fast),
        )


@pytest.mark.parametrize("fast", [True, False])
def test_k_is_clipped_to_the_number_of_values(fast):
    x = distinct(2, 3, 4, seed=5)
    for k in (12, 13, 1000):  # 12 = 3 * 4 values over dims (1, 2)
        assert torch.equal(ksparse(x, k, (1, 2), fast=fast), x)
        assert torch.equal(group_ksparse(x, 2, k, (1, 2), 0, fast=fast), x)
    assert torch.equal(ksparse(x, 1, (0,), fast=fast) != 0, x == x.amax(0, keepdim=True))
    # a single value over `dims`: always kept, even with k = 1
    y = distinct(3, 1, 4, seed=6)
    assert torch.equal(ksparse(y, 1, 1, fast=fast), y)


def test_general_path_keeps_exactly_k_even_with_ties():
    x = torch.zeros(4, 10)
    x[:, 3:6] = 1.0  # three tied maxima per row, after three zeros
    for k in (1, 2, 4, 5):
        kept = topk_mask(x, k, 1, fast=False)
        assert kept.sum(1).tolist() == [k] * 4
        # the first tied maxima, then the first tied zeros
        first = [3, 4, 5, 0, 1][:k]
        assert all(row.nonzero()[:, 0].tolist() == sorted(first) for row in kept)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dims", [(3, 4), (0, 1)])
def test_k1_keeps_one_winner_among_tied_nonzero_maxima(dims, fast):
    # A constant nonzero background (black frames through a conv with a positive bias) ties
    # exactly at the maximum. The definition keeps the k largest: the first of the tied
    # entries (tf.nn.top_k's rule), never all of them. Max-and-compare keeps them all.
    x = torch.full((3, 4, 8, 5, 5), 0.25)
    x[0, 0, :, 1, 1] = 0.1  # a few smaller values; every slice still has tied maxima
    kept = ksparse(x, 1, dims, fast=fast) != 0
    assert kept.sum(dims).max().item() == 1, "more than k = 1 winners kept"
    kept_groups = group_ksparse(x, 4, 1, dims, 2, fast=fast) != 0
    group_winners = kept_groups.unflatten(2, (4, 2)).all(3).sum(dims)
    assert group_winners.max().item() == 1, "more than k = 1 winning groups kept"


# -- exact ties: the lowest flat index wins, for every k (METHOD.md 5.1) ---------------------
def tied(kind: str, *shape: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose k-th place is an exact tie almost everywhere.

    'zeros': ReLU'd values, mostly exact zeros, with all-zero slices; 'background': a
    constant 0.25 with a few larger and smaller values, as a black background through a
    conv with a positive bias; 'levels': the values 0, 1, 2 only (their sums of squares,
    the group norms, tie exactly too).
    """
    g = gen(seed)
    if kind == "zeros":
        x = torch.relu(torch.randn(shape, generator=g) - 1.0)
        x[0] = 0.0
        return x
    if kind == "background":
        x = torch.full(shape, 0.25)
        spots = torch.rand(shape, generator=g)
        x[spots < 0.05] = 0.75
        x[spots > 0.9] = 0.1
        return x
    return torch.randint(0, 3, shape, generator=g).float()


TIE_KINDS = ["zeros", "background", "levels"]


def test_ties_go_to_the_lowest_flat_index_hand_cases():
    x = torch.tensor([[0.2, 1.0, 0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    for fast in (True, False):
        assert topk_mask(x, 3, 1, fast=fast).int().tolist() == [
            [0, 1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0, 0],
        ]
        assert topk_mask(x, 1, 1, fast=fast).int().tolist() == [
            [0, 1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
        ]
    # lifetime dims (0, 1) of (N, T, C): the flat index is n * T + t
    y = torch.ones(2, 3, 1)
    assert topk_mask(y, 4, (0, 1), fast=False)[..., 0].int().tolist() == [[1, 1, 1], [1, 0, 0]]
    # spatial dims (1, 2) of (C, H, W): the flat index is h * W + w, whatever the layout
    z = torch.zeros(1, 3, 3)
    z[0, 2, 2] = 1.0
    want = [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    column_major = z.transpose(1, 2).contiguous().transpose(1, 2)
    for scores in (z, column_major):
        assert topk_mask(scores, 3, (1, 2))[0].int().tolist() == want
    # dims given in any order are flattened in ascending order
    assert torch.equal(topk_mask(y, 4, (1, 0)), topk_mask(y, 4, (0, 1)))


@pytest.mark.parametrize("kind", TIE_KINDS)
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize(("shape", "dims"), KSPARSE_CASES)
def test_ksparse_with_ties_keeps_the_lowest_flat_indices(shape, dims, k, fast, kind):
    x = tied(kind, *shape, seed=k)
    mask = ref_first_topk_mask(x.numpy(), k, dims)
    got = topk_mask(x, k, dims, fast=fast)
    np.testing.assert_array_equal(got.numpy(), mask)
    np.testing.assert_array_equal(
        ksparse(x, k, dims, fast=fast).numpy(), np.where(mask, x.numpy(), 0)
    )


def test_tie_test_data_is_tied_at_the_kth_place():
    # the cases above must hold ties that an arbitrary tie-break would decide differently
    x = tied("zeros", 2, 3, 2, 3, 3, seed=2)
    top = x.flatten(3).topk(2, dim=-1).values
    assert (top[..., 1] == 0).float().mean() > 0.5
    x = tied("background", 2, 3, 2, 3, 3, seed=3)
    assert (x.flatten(3).topk(3, dim=-1).values[..., 2] == 0.25).float().mean() > 0.5


@pytest.mark.parametrize("kind", TIE_KINDS)
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize(("shape", "groups", "dims", "channel_dim"), GROUP_CASES)
def test_group_ksparse_with_ties_keeps_the_lowest_flat_indices(
    shape, groups, dims, channel_dim, k, fast, kind
):
    x = tied(kind, *shape, seed=k)
    mask = ref_first_group_mask(x.numpy(), groups, k, dims, channel_dim)
    out = group_ksparse(x, groups, k, dims, channel_dim, fast=fast)
    np.testing.assert_array_equal(out.numpy(), np.where(mask, x.numpy(), 0))


TIED_STEPS = (((1, (3, 4)), (2, (0, 1))), ((2, (3, 4)), (3, (0, 1))), ((3, (0, 1)), (2, (3, 4))))


@pytest.mark.parametrize("kind", TIE_KINDS)
@pytest.mark.parametrize("steps", TIED_STEPS)
@pytest.mark.parametrize("nhwc", [False, True])
def test_chains_with_ties_follow_the_definition_step_by_step(steps, kind, nhwc):
    x = tied(kind, 3, 4, 8, 5, 5, seed=7)
    if nhwc:
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 4))
    want, want_group = x.numpy().copy(), x.numpy().copy()
    for k, dims in steps:
        want = np.where(ref_first_topk_mask(want, k, dims), want, 0)
        want_group = np.where(ref_first_group_mask(want_group, 4, k, dims, 2), want_group, 0)
    for fast in (True, False):
        np.testing.assert_array_equal(ksparse_chain(x, steps, fast=fast).numpy(), want)
        got = group_ksparse_chain(x, 4, steps, 2, fast=fast)
        np.testing.assert_array_equal(got.numpy(), want_group)


# -- the k = 1 fast path equals the general path ------------------------------------------
@pytest.mark.parametrize("dims", [(3, 4), (0, 1), (1, 3, 4)])
def test_fast_path_equals_general_path_on_relu_codes(dims):
    # ReLU'd activations: continuous values plus many exact zeros (zero ties), including
    # whole slices of zeros, where max-and-compare keeps every tied zero.
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(3, 4, 8, 5, 5, generator=g) - 0.5)
    x[0, 0] = 0.0  # an all-zero frame
    x[:, :, 1, 2, 2] = 0.0  # a channel dead at one position for every sample and frame
    assert torch.equal(ksparse(x, 1, dims), ksparse(x, 1, dims, fast=False))
    assert torch.equal(group_ksparse(x, 4, 1, dims, 2), group_ksparse(x, 4, 1, dims, 2, fast=False))


def test_fast_path_gradient_equals_general_path_without_ties():
    x = distinct(2, 3, 4, 4, 4, seed=9)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for op in (
        lambda t, fast: ksparse(t, 1, (3, 4), fast=fast),
        lambda t, fast: group_ksparse(t, 2, 1, (0, 1), 2, fast=fast),
    ):
        grads = []
        for fast in (True, False):
            xi = x.clone().requires_grad_(True)
            op(xi, fast).backward(grad)
            grads.append(xi.grad)
        assert torch.equal(grads[0], grads[1])


# -- the mask is a constant for autograd ---------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_ksparse_gradient_is_the_mask(k, fast):
    x = distinct(2, 3, 3, 4, seed=k).requires_grad_(True)
    upstream = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) + 0.5
    ksparse(x, k, (2, 3), fast=fast).backward(upstream)
    mask = torch.from_numpy(ref_topk_mask(x.detach().numpy(), k, (2, 3)))
    assert torch.equal(x.grad, upstream * mask)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_group_ksparse_gradient_is_the_group_mask(k, fast):
    # The group norms pick winners but carry no gradient: d out / d x is the 0/1 mask.
    x = uniform(3, 4, 6, 2, seed=k).requires_grad_(True)
    upstream = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    group_ksparse(x, 3, k, (0, 1), 2, fast=fast).backward(upstream)
    mask = torch.from_numpy(ref_group_mask(x.detach().numpy(), 3, k, (0, 1), 2))
    assert 0 < mask.sum() < mask.numel()
    assert torch.equal(x.grad, upstream * mask)


def test_topk_mask_carries_no_gradient():
    x = distinct(3, 4, seed=0).requires_grad_(True)
    mask = topk_mask(x, 1, 1)
    assert mask.dtype == torch.bool and not mask.requires_grad


# -- every error ---------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
def test_errors(fast):
    x = torch.rand(2, 4, 3)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ksparse(x, 0, 1, fast=fast)
    with pytest.raises(ValueError, match="k must be at least 1"):
        group_ksparse(x, 2, 0, 0, 1, fast=fast)
    with pytest.raises(ValueError, match="k must be at least 1"):
        topk_mask(x, -1, 1, fast=fast)
    with pytest.raises(ValueError, match="at least one dimension"):
        ksparse(x, 1, (), fast=fast)
    with pytest.raises(ValueError, match="at least one dimension"):
        group_ksparse(x, 2, 1, (), 1, fast=fast)
    for bad in (3, -4, (0, 5)):
        with pytest.raises(ValueError, match="out of range"):
            ksparse(x, 1, bad, fast=fast)
        with pytest.raises(ValueError, match="out of range"):
            group_ksparse(x, 2, 1, bad, 1, fast=fast)
    with pytest.raises(ValueError, match="same dimension twice"):
        ksparse(x, 1, (2, -1), fast=fast)
    with pytest.raises(ValueError, match="same dimension twice"):
        group_ksparse(x, 2, 1, (0, 0), 1, fast=fast)
    for groups in (3, 0, -2, 5):  # 4 channels: 3 and 5 do not divide, 0 and -2 are invalid
        with pytest.raises(ValueError, match="must divide the 4 channels"):
            group_ksparse(x, groups, 1, 0, 1, fast=fast)
        with pytest.raises(ValueError, match="must divide the 4 channels"):
            group_norms(x, groups, 1)
    with pytest.raises(ValueError, match="channel dim"):
        group_ksparse(x, 2, 1, (0, 1), 1, fast=fast)
    with pytest.raises(ValueError, match="channel dim"):
        group_ksparse(x, 2, 1, (0, -2), -2, fast=fast)


@pytest.mark.parametrize("channel_dim", [3, 7, -4])
def test_out_of_range_channel_dim_is_an_error(channel_dim):
    # A channel_dim outside the tensor must not silently wrap around to another dim
    # (7 % 3 == 1 would treat dim 1 as channels).
    x = torch.rand(2, 4, 4)
    with pytest.raises((ValueError, IndexError)):
        group_ksparse(x, 2, 1, 0, channel_dim)
    with pytest.raises((ValueError, IndexError)):
        group_norms(x, 2, channel_dim)


# -- fused masks ------------------------------------------------------------------------------
STEPS = (((1, (3, 4)), (1, (0, 1))), ((2, (3, 4)), (3, (0, 1))), ((25, (3, 4)), (1, (0, 1))))


def relu_code(seed: int = 0) -> torch.Tensor:
    x = torch.relu(torch.randn(3, 4, 8, 5, 5, generator=gen(seed)) - 0.3)
    x[0, 0] = 0.0  # an all-zero frame: zero ties everywhere
    x[1, :, :, 2, 2] = 0.7  # exact nonzero ties across frames (a constant background)
    return x


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("fast", [True, False])
def test_ksparse_chain_equals_composed_ksparse(steps, fast):
    x = relu_code()
    up = torch.randn(x.shape, generator=gen(1))

    def composed(t):
        for k, dims in steps:
            t = ksparse(t, k, dims, fast=fast)
        return t

    out_c, (g_c,) = grads_of(composed, x, upstream=up)
    out_f, (g_f,) = grads_of(lambda t: ksparse_chain(t, steps, fast=fast), x, upstream=up)
    assert torch.equal(out_f, out_c)
    assert torch.equal(g_f, g_c)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("nhwc", [False, True])
def test_group_ksparse_chain_equals_composed_group_ksparse(steps, fast, nhwc):
    x = relu_code(seed=2)
    if nhwc:  # frames in channels-last layout, as the encoder gives them on CPU
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 4))
    up = torch.randn(x.shape, generator=gen(3))

    def composed(t):
        for k, dims in steps:
            t = group_ksparse(t, 4, k, dims, 2, fast=fast)
        return t

    out_c, (g_c,) = grads_of(composed, x, upstream=up)
    out_f, (g_f,) = grads_of(
        lambda t: group_ksparse_chain(t, 4, steps, 2, fast=fast), x, upstream=up
    )
    assert torch.equal(out_f, out_c)
    assert torch.equal(g_f, g_c)


def test_group_ksparse_chain_on_bf16_ranks_in_fp32():
    x = relu_code(seed=4)
    steps = ((1, (3, 4)), (1, (0, 1)))
    want = group_ksparse_chain(x.bfloat16().float(), 4, steps, 2)
    got = group_ksparse_chain(x.bfloat16(), 4, steps, 2)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got.float(), want)


def test_chains_check_their_arguments():
    x = relu_code()
    with pytest.raises(ValueError, match="channel dim"):
        group_ksparse_chain(x, 4, ((1, (2, 3)),), 2)
    with pytest.raises(ValueError, match="divide"):
        group_ksparse_chain(x, 3, ((1, (3, 4)),), 2)
    with pytest.raises(ValueError, match="k must"):
        ksparse_chain(x, ((0, (3, 4)),))
