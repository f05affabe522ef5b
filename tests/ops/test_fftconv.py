"""Convolution by FFT equals F.conv2d, forward and backward (within float rounding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensors import gen, grads_of

from gksparse.model.layers import FrameConv2d, uses_fft
from gksparse.ops.fftconv import fft_conv2d, fft_pays


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


def test_fft_conv_in_chunks_of_frames_equals_conv2d(monkeypatch):
    # about 3 frames per chunk: the transforms run chunk by chunk into the same buffers
    monkeypatch.setattr("gksparse.ops.fftconv.CHUNK_VALUES", 8 * 2 * 13 * 6 * 3)
    x = torch.randn(10, 8, 9, 7, generator=gen(0))
    wt = torch.randn(6, 8, 5, 5, generator=gen(1))
    bias = torch.randn(6, generator=gen(2))
    up = torch.randn(10, 6, 9, 7, generator=gen(3))
    out_d, grads_d = grads_of(
        lambda x, w, b: F.conv2d(x, w, b, padding=2), x, wt, bias, upstream=up
    )
    out_f, grads_f = grads_of(fft_conv2d, x, wt, bias, upstream=up)
    torch.testing.assert_close(out_f, out_d, rtol=1e-4, atol=1e-4)
    for g_f, g_d in zip(grads_f, grads_d, strict=True):
        torch.testing.assert_close(g_f, g_d, rtol=1e-4, atol=1e-4)
