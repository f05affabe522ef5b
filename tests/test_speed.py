"""The speed levers give the plain path's results: sparse decoder, fused masks, layouts, bf16.

Each fast path is checked against the plain one within float rounding, forward and backward.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from gksparse import runtime
from gksparse.layers import (
    ConvMinimalRNN2d,
    FrameConv2d,
    FrameConvTranspose2d,
    _SparseGradConv2d,
    fft_conv2d,
    fft_pays,
    occupied_sites,
    sparse_conv_transpose2d,
    uses_fft,
)
from gksparse.models import ModelConfig, build_model
from gksparse.sparsity import (
    group_ksparse,
    group_ksparse_chain,
    ksparse,
    ksparse_chain,
)
from gksparse.train import autocast


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sparse_code(*shape: int, density: float, seed: int = 0) -> torch.Tensor:
    """ReLU'd values where only a `density` fraction of the pixels carry nonzero channels."""
    b, c, h, w = shape
    on = torch.rand(b, 1, h, w, generator=gen(seed)) < density
    return torch.relu(torch.randn(shape, generator=gen(seed + 1))) * on


def grads_of(fn, *tensors: torch.Tensor, upstream: torch.Tensor):
    """(output, grads of `tensors`) of `fn(*tensors)` for the given upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(upstream)
    return out.detach(), [leaf.grad for leaf in leaves]


# -- the sparse decoder ---------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [1, 3, 7, 11])
@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("density", [0.05, 1.0])
def test_sparse_transposed_conv_equals_dense(kernel_size, nhwc, density):
    x = sparse_code(5, 8, 9, 7, density=density)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 3, kernel_size, kernel_size, generator=gen(3))
    b = torch.randn(3, generator=gen(4))
    up = torch.randn(5, 3, 9, 7, generator=gen(5))
    pad = kernel_size // 2
    out_d, (gx_d, gw_d, gb_d) = grads_of(
        lambda x, w, b: F.conv_transpose2d(x, w, b, padding=pad), x, w, b, upstream=up
    )
    out_s, (gx_s, gw_s, gb_s) = grads_of(sparse_conv_transpose2d, x, w, b, upstream=up)
    tol = dict(rtol=1e-5, atol=1e-4)  # fp32 sums of up to 8 * 11 * 11 terms of size ~10
    torch.testing.assert_close(out_s, out_d, **tol)
    torch.testing.assert_close(gw_s, gw_d, **tol)
    torch.testing.assert_close(gb_s, gb_d, **tol)
    site = x.ne(0).any(1, keepdim=True)
    # the input gradient is exact at every occupied pixel (all channels), zero elsewhere
    torch.testing.assert_close(gx_s * site, gx_d * site, **tol)
    assert not (gx_s * ~site).any()
    assert gx_s.is_contiguous(memory_format=torch.channels_last) == nhwc


def test_sparse_transposed_conv_in_double_precision_is_tight():
    x = sparse_code(3, 4, 6, 6, density=0.2).double()
    w = torch.randn(4, 2, 5, 5, generator=gen(1), dtype=torch.float64)
    b = torch.randn(2, generator=gen(2), dtype=torch.float64)
    up = torch.randn(3, 2, 6, 6, generator=gen(3), dtype=torch.float64)
    out_d, (_, gw_d, gb_d) = grads_of(
        lambda x, w, b: F.conv_transpose2d(x, w, b, padding=2), x, w, b, upstream=up
    )
    out_s, (_, gw_s, gb_s) = grads_of(sparse_conv_transpose2d, x, w, b, upstream=up)
    assert out_s.dtype == torch.float64
    torch.testing.assert_close(out_s, out_d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw_s, gw_d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb_s, gb_d, rtol=1e-12, atol=1e-12)


def test_sparse_transposed_conv_of_an_all_zero_code_is_the_bias():
    x = torch.zeros(2, 4, 5, 5)
    w = torch.randn(4, 3, 3, 3, generator=gen(0), requires_grad=True)
    b = torch.randn(3, generator=gen(1), requires_grad=True)
    out = sparse_conv_transpose2d(x, w, b)
    torch.testing.assert_close(out, b.detach().view(1, 3, 1, 1).expand(2, 3, 5, 5))
    out.sum().backward()
    assert not w.grad.any()
    torch.testing.assert_close(b.grad, torch.full((3,), 50.0))


def test_occupied_sites_are_the_pixels_with_any_nonzero_channel():
    x = torch.zeros(2, 3, 4, 4)
    x[0, 1, 2, 3] = 1.0
    x[1, 0, 0, 0] = -2.0
    x[1, 2, 0, 0] = 5.0
    b, y, xx = occupied_sites(x)
    assert sorted(zip(b.tolist(), y.tolist(), xx.tolist(), strict=True)) == [
        (0, 2, 3),
        (1, 0, 0),
    ]


def frame_decoder(sparse) -> FrameConvTranspose2d:
    torch.manual_seed(0)
    dec = FrameConvTranspose2d(8, 2, 5)
    with torch.no_grad():
        dec.bias.uniform_(-1, 1)
    dec.sparse = sparse
    return dec


@pytest.mark.parametrize("density", [0.03, 0.9])
def test_frame_decoder_auto_equals_dense(density, monkeypatch):
    code = sparse_code(3 * 4, 8, 6, 6, density=density).unflatten(0, (3, 4))
    up = torch.randn(3, 4, 2, 6, 6, generator=gen(7))
    dense, auto = frame_decoder(False), frame_decoder("auto")
    out_d, (gx_d,) = grads_of(dense, code, upstream=up)
    calls = []
    monkeypatch.setattr(
        "gksparse.layers.sparse_conv_transpose2d",
        lambda *a: calls.append(1) or sparse_conv_transpose2d(*a),
    )
    out_a, (gx_a,) = grads_of(auto, code, upstream=up)
    assert bool(calls) == (density < auto.max_density)  # sparse codes only
    torch.testing.assert_close(out_a, out_d)
    site = code.ne(0).any(2, keepdim=True)
    torch.testing.assert_close(gx_a * site, gx_d * site)
    for p_a, p_d in zip(auto.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p_a.grad, p_d.grad)


# -- convolution by FFT -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("b", "c_in", "c_out", "h", "w", "k"),
    [
        (4, 8, 5, 9, 7, 5),
        (3, 16, 16, 16, 16, 5),
        (2, 4, 6, 8, 10, 3),
        (2, 3, 3, 5, 6, 7),
        (2, 4, 4, 6, 6, 1),
    ],
)
def test_fft_conv_equals_conv2d(b, c_in, c_out, h, w, k):
    x = torch.randn(b, c_in, h, w, generator=gen(0))
    wt = torch.randn(c_out, c_in, k, k, generator=gen(1))
    bias = torch.randn(c_out, generator=gen(2))
    up = torch.randn(b, c_out, h, w, generator=gen(3))
    out_d, grads_d = grads_of(
        lambda x, w, b: F.conv2d(x, w, b, padding=k // 2), x, wt, bias, upstream=up
    )
    out_f, grads_f = grads_of(fft_conv2d, x, wt, bias, upstream=up)
    tol = dict(rtol=1e-4, atol=1e-4)  # fp32 FFTs: ~1e-6 of the largest value
    torch.testing.assert_close(out_f, out_d, **tol)
    for g_f, g_d in zip(grads_f, grads_d, strict=True):
        torch.testing.assert_close(g_f, g_d, **tol)


def test_fft_conv_under_autocast_is_bf16_and_close():
    x = torch.randn(3, 16, 12, 12, generator=gen(0))
    wt = torch.randn(16, 16, 5, 5, generator=gen(1)) / 20
    want = F.conv2d(x, wt, padding=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fft_conv2d(x, wt)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


def test_fft_is_chosen_for_wide_5x5_convolutions_only():
    assert fft_pays(128, 128, 5) and fft_pays(256, 256, 5)
    assert not fft_pays(64, 64, 3) and not fft_pays(3, 128, 5)
    assert uses_fft(FrameConv2d(64, 64, 5)) and not uses_fft(FrameConv2d(64, 64, 3))
    assert not uses_fft(FrameConv2d(64, 64, 5), "meta")  # the CPU only


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


# -- the last convolution's sparse backward -------------------------------------------------
@pytest.mark.parametrize("density", [0.05, 0.9])
@pytest.mark.parametrize("nhwc", [False, True])
def test_sparse_grad_conv_equals_conv2d(density, nhwc):
    x = torch.randn(6, 8, 9, 7, generator=gen(0))
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(5, 8, 3, 3, generator=gen(1))
    bias = torch.randn(5, generator=gen(2))
    up = torch.randn(6, 5, 9, 7, generator=gen(3)) * (
        torch.rand(6, 1, 9, 7, generator=gen(4)) < density
    )
    out_d, grads_d = grads_of(
        lambda x, w, b: F.conv2d(x, w, b, padding=1), x, wt, bias, upstream=up
    )
    out_s, grads_s = grads_of(_SparseGradConv2d.apply, x, wt, bias, upstream=up)
    torch.testing.assert_close(out_s, out_d)
    for g_s, g_d in zip(grads_s, grads_d, strict=True):
        torch.testing.assert_close(g_s, g_d, rtol=1e-5, atol=1e-5)
    assert grads_s[0].is_contiguous(memory_format=torch.channels_last) == nhwc


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


# -- whole models: sparse decoder, layouts, autocast -----------------------------------------
def tiny(method: str, **kw) -> tuple:
    cfg = ModelConfig(method, 2, 8, 8, 5, filters=8, enc_kernel=3, dec_kernel=5, groups=4, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # nonzero biases: black backgrounds tie exactly
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    x = torch.rand(3, 4, 2, 8, 8, generator=gen(1))
    x[0, :, :, :4] = 0.0  # part black background
    return model, x


def loss_and_grads(model, x, use_autocast: bool = False):
    model.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), use_autocast):
        loss = model.pretrain_loss(x)
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


MODEL_CASES = [
    ("groupwtacnn", {}),
    ("groupwtacrnn", {}),
    ("wtacnn", {}),
    ("wtacrnn", {}),
    ("slowgroupwtacnn", {}),
    ("groupwtacnn", {"k_spatial": 64}),  # nospatial
    ("groupwtacrnn", {"k_lifetime": 12}),  # nolifetime
    ("denoisingcnn", {}),
]


@pytest.mark.parametrize(("method", "kw"), MODEL_CASES)
def test_sparse_decoder_gives_the_dense_loss_and_gradients(method, kw):
    model, x = tiny(method, **kw)
    dense = copy.deepcopy(model)
    dense.decoder.sparse = False
    torch.manual_seed(5)  # same input dropout for the denoising method
    loss_s, grads_s = loss_and_grads(model, x)
    torch.manual_seed(5)
    loss_d, grads_d = loss_and_grads(dense, x)
    torch.testing.assert_close(loss_s, loss_d)
    assert grads_s.keys() == grads_d.keys()
    for name in grads_d:
        torch.testing.assert_close(grads_s[name], grads_d[name], msg=name)


def all_levers_off(model):
    """The reference: dense decoder, direct convolutions, autograd recurrence, dense backward."""
    model = copy.deepcopy(model)
    model.decoder.sparse = False
    for m in model.modules():
        if isinstance(m, FrameConv2d):
            m.fft, m.sparse_grad = False, False
        if isinstance(m, ConvMinimalRNN2d):
            m.fft, m.fused = False, False
    return model


@pytest.mark.parametrize(("method", "kw"), MODEL_CASES)
@pytest.mark.parametrize("fft", ["auto", True])
def test_all_levers_give_the_plain_loss_and_gradients(method, kw, fft):
    model, x = tiny(method, **kw)
    for m in model.modules():
        if isinstance(m, FrameConv2d | ConvMinimalRNN2d):
            m.fft = fft  # True: FFT even for the tiny 3 x 3 layers
    plain = all_levers_off(model)
    torch.manual_seed(5)
    loss_f, grads_f = loss_and_grads(model, x)
    torch.manual_seed(5)
    loss_p, grads_p = loss_and_grads(plain, x)
    torch.testing.assert_close(loss_f, loss_p)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn"])
def test_channels_last_gives_the_same_loss_and_gradients(method):
    model, x = tiny(method)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert nhwc.encoder.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    loss_a, grads_a = loss_and_grads(model, x)
    loss_b, grads_b = loss_and_grads(nhwc, x)
    torch.testing.assert_close(loss_b, loss_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)
    model.eval(), nhwc.eval()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), model(x))


@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn"])
def test_bf16_autocast_loss_is_fp32_and_close(method):
    model, x = tiny(method)
    loss32, _ = loss_and_grads(model, x)
    loss16, grads16 = loss_and_grads(copy.deepcopy(model), x, use_autocast=True)
    assert loss16.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads16.values())
    torch.testing.assert_close(loss16, loss32, rtol=3e-2, atol=1e-3)


# -- runtime settings ---------------------------------------------------------------------------
def test_runtime_configure_and_prepare_model():
    settings = runtime.configure("cpu")
    assert settings.device == torch.device("cpu")
    assert not settings.autocast  # fp32 unless asked
    assert runtime.configure("cpu", fast_cpu=True).autocast
    assert not runtime.configure("cpu", fast_cpu=True, autocast=False).autocast
    assert isinstance(settings.allocator, bool)
    model, x = tiny("groupwtacnn")
    runtime.prepare_model(model, settings)
    assert (
        model.encoder.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
        == settings.channels_last
    )
    assert "threads=" in runtime.describe(settings)


def test_allocator_setting_is_glibc_only():
    import platform

    assert runtime.keep_freed_memory() == (
        platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    )
    assert not runtime.configure("cpu", allocator=False).allocator
