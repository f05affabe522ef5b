"""The sparse decoder and the sparse backward of the last encoder convolution equal the
dense convolutions, forward and backward (within float rounding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensors import gen, grads_of, sparse_code

from gksparse.model.layers import FrameConvTranspose2d
from gksparse.ops.sparseconv import _SparseGradConv2d, occupied_sites, sparse_conv_transpose2d


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
        "gksparse.model.layers.sparse_conv_transpose2d",
        lambda *a: calls.append(1) or sparse_conv_transpose2d(*a),
    )
    out_a, (gx_a,) = grads_of(auto, code, upstream=up)
    assert bool(calls) == (density < auto.max_density)  # sparse codes only
    torch.testing.assert_close(out_a, out_d)
    site = code.ne(0).any(2, keepdim=True)
    torch.testing.assert_close(gx_a * site, gx_d * site)
    for p_a, p_d in zip(auto.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p_a.grad, p_d.grad)


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


# -- gradient layouts -----------------------------------------------------------------------
def raw_grads(fn, *tensors: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The gradients of `fn(*tensors)` as its backward returns them: no AccumulateGrad, which
    would copy one of another memory order into the leaf's layout."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    return torch.autograd.grad(fn(*leaves), leaves, upstream)


@pytest.mark.parametrize("c_out", [1, 3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_sparse_transposed_conv_kernel_gradient_has_the_kernels_strides(layout, c_out):
    # a (C_in, 1, k, k) kernel: the same memory order either way, only the strides of the
    # size-1 dim differ (DDP compares all of them); (C_in, 3, k, k): another memory order
    x = sparse_code(4, 8, 7, 7, density=0.1).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, c_out, 5, 5, generator=gen(1)).to(memory_format=layout)
    b = torch.randn(c_out, generator=gen(2))
    up = torch.randn(4, c_out, 7, 7, generator=gen(3))
    _, gw, gb = raw_grads(sparse_conv_transpose2d, x, w, b, upstream=up)
    _, gw_d, _ = raw_grads(
        lambda x, w, b: F.conv_transpose2d(x, w, b, padding=2), x, w, b, upstream=up
    )
    assert gw.stride() == w.stride() and gb.stride() == b.stride()
    torch.testing.assert_close(gw, gw_d, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("density", [0.05, 0.9])  # the sparse and the dense backward
@pytest.mark.parametrize("c_in", [1, 8])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_sparse_grad_conv_kernel_gradient_has_the_kernels_strides(layout, c_in, density):
    x = torch.randn(6, c_in, 9, 7, generator=gen(0)).to(memory_format=layout)
    wt = torch.randn(5, c_in, 3, 3, generator=gen(1)).to(memory_format=layout)
    bias = torch.randn(5, generator=gen(2))
    up = torch.randn(6, 5, 9, 7, generator=gen(3)) * (
        torch.rand(6, 1, 9, 7, generator=gen(4)) < density
    )
    _, gw, gb = raw_grads(_SparseGradConv2d.apply, x, wt, bias, upstream=up)
    _, gw_d, _ = raw_grads(lambda x, w, b: F.conv2d(x, w, b, padding=1), x, wt, bias, upstream=up)
    assert gw.stride() == wt.stride() and gb.stride() == bias.stride()
    torch.testing.assert_close(gw, gw_d, rtol=1e-5, atol=1e-5)
