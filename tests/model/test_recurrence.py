"""ConvMinimalRNN2d against the recurrence written as a plain loop (METHOD.md section 3),
and its fused backward against plain autograd."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tensors import gen, grads_of, seeded

from gksparse.model.layers import FrameConv2d, FrameConvTranspose2d
from gksparse.model.recurrence import ConvMinimalRNN2d


def rnn_loop(rnn: ConvMinimalRNN2d, x: torch.Tensor, h0: torch.Tensor | None = None):
    """The recurrence exactly as written in METHOD.md, one frame at a time."""
    pad = rnn.kernel_size // 2
    n, t, c, hh, ww = x.shape
    h = torch.zeros(n, c, hh, ww) if h0 is None else h0
    states = []
    for i in range(t):
        u = torch.sigmoid(
            F.conv2d(x[:, i], rnn.weight, padding=pad)
            + rnn.bias.view(1, -1, 1, 1)
            + F.conv2d(h, rnn.recurrent_weight, padding=pad)
        )
        h = (1 - u) * h + u * x[:, i]
        states.append(h)
    return torch.stack(states, dim=1)


def randomized_rnn(channels: int, kernel_size: int, seed: int = 0) -> ConvMinimalRNN2d:
    """A layer with nonzero bias (the default is zero) so every term is exercised."""
    torch.manual_seed(seed)
    rnn = ConvMinimalRNN2d(channels, kernel_size)
    with torch.no_grad():
        rnn.bias.normal_()
        rnn.weight.mul_(2)
    return rnn


@pytest.mark.parametrize("t", [1, 2, 5])
@pytest.mark.parametrize(("channels", "kernel_size"), [(3, 3), (2, 5), (4, 1)])
def test_rnn_matches_plain_loop(t, channels, kernel_size):
    rnn = randomized_rnn(channels, kernel_size)
    x = seeded(2, t, channels, 5, 6, seed=t)  # non-square frames
    out = rnn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, rnn_loop(rnn, x), rtol=1e-5, atol=1e-6)


def test_rnn_matches_plain_loop_with_initial_state():
    rnn = randomized_rnn(3, 3, seed=1)
    x, h0 = seeded(2, 4, 3, 4, 4, seed=1), seeded(2, 3, 4, 4, seed=2)
    out = rnn(x, h0)
    torch.testing.assert_close(out, rnn_loop(rnn, x, h0), rtol=1e-5, atol=1e-6)
    # an explicit zero state is the default state
    torch.testing.assert_close(rnn(x, torch.zeros(2, 3, 4, 4)), rnn(x), rtol=1e-6, atol=1e-7)


def test_rnn_gradients_match_plain_loop():
    rnn = randomized_rnn(3, 3, seed=2)
    x = seeded(2, 4, 3, 5, 5, seed=3)
    upstream = seeded(2, 4, 3, 5, 5, seed=4)
    grads = []
    for fn in (rnn, lambda v: rnn_loop(rnn, v)):
        rnn.zero_grad()
        xi = x.clone().requires_grad_(True)
        fn(xi).backward(upstream)
        grads.append([xi.grad, rnn.weight.grad, rnn.bias.grad, rnn.recurrent_weight.grad])
    for got, want in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the recurrent kernel is used (and trained) from the second frame on
    assert rnn.recurrent_weight.grad.abs().sum() > 0


def test_rnn_is_causal_and_first_state_hand_computed():
    rnn = randomized_rnn(2, 3, seed=3)
    x = seeded(1, 5, 2, 4, 4, seed=5)
    out = rnn(x)
    # h_1 = u_1 * x_1 with u_1 = sigmoid(conv(x_1, W) + b), as h_0 = 0
    u1 = torch.sigmoid(F.conv2d(x[:, 0], rnn.weight, rnn.bias, padding=1))
    torch.testing.assert_close(out[:, 0], u1 * x[:, 0])
    changed = x.clone()
    changed[:, 3:] = seeded(1, 2, 2, 4, 4, seed=6)
    out2 = rnn(changed)
    assert torch.equal(out2[:, :3], out[:, :3])  # the future does not leak backwards
    assert not torch.allclose(out2[:, 3:], out[:, 3:])


def test_rnn_state_is_a_convex_combination():
    # h_t lies between h_{t-1} and x_t elementwise, so positive inputs give states in
    # [0, max input].
    rnn = randomized_rnn(3, 3, seed=4)
    x = seeded(2, 6, 3, 4, 4, seed=7).abs()
    out = rnn(x)
    assert (out >= 0).all() and (out <= x.amax()).all()


def test_rnn_rejects_bad_shapes_and_kernels():
    rnn = ConvMinimalRNN2d(3, 3)
    with pytest.raises(ValueError, match=r"expects \(N, T, 3, H, W\)"):
        rnn(torch.zeros(2, 4, 2, 5, 5))
    with pytest.raises(ValueError, match=r"expects \(N, T, 3, H, W\)"):
        rnn(torch.zeros(2, 3, 5, 5))
    for k in (2, 0, -1):
        with pytest.raises(ValueError, match="odd"):
            ConvMinimalRNN2d(3, k)
        with pytest.raises(ValueError, match="odd"):
            FrameConv2d(3, 3, k)
        with pytest.raises(ValueError, match="odd"):
            FrameConvTranspose2d(3, 3, k)


def test_rnn_initialisation():
    torch.manual_seed(0)
    c, k = 6, 3
    rnn = ConvMinimalRNN2d(c, k)
    u = rnn.recurrent_weight.detach().reshape(c, c * k * k)
    torch.testing.assert_close(u @ u.T, torch.eye(c), rtol=0, atol=1e-5)  # orthonormal rows
    assert torch.equal(rnn.bias, torch.zeros(c))
    limit = math.sqrt(6 / (2 * c * k * k))  # Glorot uniform, fan_in = fan_out = c*k*k
    assert rnn.weight.abs().max() <= limit


# -- the fused recurrence ---------------------------------------------------------------------
@pytest.mark.parametrize("fft", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("t", [1, 4])
def test_fused_rnn_equals_autograd_rnn(fft, with_h0, t):
    torch.manual_seed(0)
    plain = ConvMinimalRNN2d(6, 3)
    plain.fused, plain.fft = False, False
    fused = copy.deepcopy(plain)
    fused.fused, fused.fft = True, fft
    x = torch.rand(2, t, 6, 5, 7, generator=gen(1))
    h0 = torch.rand(2, 6, 5, 7, generator=gen(2)) if with_h0 else None
    up = torch.randn(2, t, 6, 5, 7, generator=gen(3))
    results = []
    for rnn in (plain, fused):
        inputs = [x] if h0 is None else [x, h0]
        out, grads = grads_of(rnn, *inputs, upstream=up)
        results.append((out, grads, [p.grad for p in rnn.parameters()]))
        rnn.zero_grad()
    (out_p, g_p, w_p), (out_f, g_f, w_f) = results
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_f, out_p, **tol)
    for a, b in zip(g_f + w_f, g_p + w_p, strict=True):
        if b is None:  # U has no gradient when T = 1 and h_0 = 0
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, **tol)


def test_fused_rnn_under_autocast_runs_in_bf16():
    torch.manual_seed(0)
    rnn = ConvMinimalRNN2d(4, 3)
    x = torch.rand(2, 3, 4, 5, 5, generator=gen(1), requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rnn(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 for p in rnn.parameters())
