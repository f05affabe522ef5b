"""Convolution by FFT: a 'same' k x k convolution of frames as one matrix product per
frequency instead of k * k per pixel; pays on the CPU for k >= 5 and tens of channels
(`fft_pays`). Same results as `F.conv2d` within float rounding (tests/test_fftconv.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# A 'same' k x k correlation of H x W frames is a circular correlation on an Nh x Nw grid,
# Nh = H + k - 1 (no wrap-around reaches the H x W output). In the frequency domain it is,
# per frequency, one matrix product over the channels: (B, C_in) @ (C_in, C_out), complex.
# The complex products run as real matmuls of the planar layout [re | im]: spectra are
# `(F, B, 2C)` (F = Nh * (Nw // 2 + 1) frequencies) and a kernel is the real block matrix
# [[Wr, -Wi], [Wi, Wr]] `(F, 2C_in, 2C_out)`. FFTs are fp32; the matmuls are fp32, or bf16
# under CPU autocast (as a bf16 convolution would be).


@functools.lru_cache(maxsize=16)
def _dft_matrices(
    k: int, nh: int, nw: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(`(k*k, 2F)` kernel taps -> [re | im] spectrum, `(2F, k*k)` [re; im] -> taps).

    A tap `(dy, dx)` sits at grid position `(dy - k//2, dx - k//2)` mod the grid, so that
    the correlation's output needs no shift. The inverse uses the half spectrum of a real
    signal: columns other than 0 and Nw/2 stand for two conjugate bins.
    """
    p, m = k // 2, nw // 2 + 1
    d = torch.arange(k, dtype=torch.float64) - p
    fy = torch.arange(nh, dtype=torch.float64) / nh
    fx = torch.arange(m, dtype=torch.float64) / nw
    theta = 2 * math.pi * (d.view(k, 1, 1, 1) * fy.view(1, 1, nh, 1) + d.view(1, k, 1, 1) * fx)
    theta = theta.reshape(k * k, nh * m)
    forward = torch.cat([theta.cos(), -theta.sin()], dim=1)
    weight = torch.full((m,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if nw % 2 == 0:
        weight[-1] = 1.0
    weight = weight.repeat(nh) / (nh * nw)
    inverse = torch.cat([theta.cos() * weight, -theta.sin() * weight], dim=1).t()
    return forward.float().to(device), inverse.contiguous().float().to(device)


def fft_grid(h: int, w: int, k: int) -> tuple[int, int, int]:
    """(Nh, Nw, number of frequencies) of the FFT grid for H x W frames and a k x k kernel."""
    nh, nw = h + k - 1, w + k - 1
    return nh, nw, nh * (nw // 2 + 1)


# Frames are transformed in chunks of about this many float32 values of spectrum, so the
# transforms' temporaries stay small (a whole coil100 batch would need ~1.5 GB of them).
CHUNK_VALUES = 2**24


def _chunks(b: int, per_frame: int) -> list[tuple[int, int]]:
    step = max(1, CHUNK_VALUES // per_frame)
    return [(i, min(i + step, b)) for i in range(0, b, step)]


def spectra(
    x: torch.Tensor, nh: int, nw: int, dtype: torch.dtype, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`(B, C, H, W)` -> planar spectra `(F, B, 2C)` in `dtype` (two cheap transposes).

    out: an `(F, B, 2C)` tensor to write into (e.g. a slice of a larger buffer).
    """
    b, c = x.shape[:2]
    nf = nh * (nw // 2 + 1)
    if out is None:
        out = torch.empty(nf, b, 2 * c, dtype=dtype, device=x.device)
    planes = out.view(nf, b, 2, c)
    for i, j in _chunks(b, 2 * c * nf):
        z = torch.view_as_real(torch.fft.rfft2(x[i:j].float(), s=(nh, nw))).reshape(j - i, c, -1)
        t = z.transpose(1, 2).contiguous()  # (b, 2F, C): batched 2-D transposes
        planes[:, i:j].copy_(t.view(j - i, nf, 2, c).transpose(0, 1))  # whole rows of C
    return out


def frames_of_spectra(
    spec: torch.Tensor,
    h: int,
    w: int,
    nh: int,
    nw: int,
    dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Planar spectra `(F, B, 2C)` -> frames `(B, C, H, W)` in `dtype`, plus `bias`."""
    nf, b, c2 = spec.shape
    c, m = c2 // 2, nw // 2 + 1
    out = torch.empty(b, c, h, w, dtype=dtype, device=spec.device)
    planes = spec.view(nf, b, 2, c)
    for i, j in _chunks(b, c2 * nf):
        t = torch.empty(j - i, nf, 2, c, dtype=torch.float32, device=spec.device)
        t.copy_(planes[:, i:j].transpose(0, 1))
        z = t.view(j - i, 2 * nf, c).transpose(1, 2).contiguous().view(j - i, c, nh, m, 2)
        z = torch.view_as_complex(z)
        if bias is not None:  # a constant image is its DC bin, times the grid size
            z[:, :, 0, 0] += bias.float() * (nh * nw)
        out[i:j].copy_(torch.fft.irfft2(z, s=(nh, nw))[..., :h, :w])
    return out


def kernel_blocks(weight: torch.Tensor, nh: int, nw: int, dtype: torch.dtype) -> torch.Tensor:
    """`(C_out, C_in, k, k)` -> the block matrices `(F, 2C_in, 2C_out)` of its spectrum."""
    c_out, c_in, k, _ = weight.shape
    forward, _ = _dft_matrices(k, nh, nw, weight.device)
    taps = weight.detach().float().permute(2, 3, 1, 0).reshape(k * k, c_in * c_out)
    re, im = (forward.t() @ taps).view(2, -1, c_in, c_out)
    blocks = torch.empty(re.shape[0], 2, c_in, 2, c_out, dtype=dtype, device=weight.device)
    blocks[:, 0, :, 0] = re
    blocks[:, 1, :, 1] = re
    blocks[:, 1, :, 0] = im
    torch.neg(im, out=im)
    blocks[:, 0, :, 1] = im
    return blocks.view(-1, 2 * c_in, 2 * c_out)


def spectral_kernel_grad(
    spec_x: torch.Tensor, spec_g: torch.Tensor, k: int, nh: int, nw: int
) -> torch.Tensor:
    """Gradient `(C_out, C_in, k, k)` (fp32, contiguous) of a correlation from its input and
    output gradient spectra (`(F, K, 2C_in)`, `(F, K, 2C_out)`; K frames, summed)."""
    nf, _, c2_in = spec_x.shape
    c_in, c_out = c2_in // 2, spec_g.shape[2] // 2
    prod = torch.bmm(spec_g.transpose(1, 2), spec_x).view(nf, 2, c_out, 2, c_in)
    # sum over frames of conj(G) X: re = Gr Xr + Gi Xi, im = Gr Xi - Gi Xr
    both = torch.empty(2, nf, c_out, c_in, device=spec_x.device)
    both[0].copy_(prod[:, 0, :, 0]).add_(prod[:, 1, :, 1])
    both[1].copy_(prod[:, 0, :, 1]).sub_(prod[:, 1, :, 0])
    _, inverse = _dft_matrices(k, nh, nw, spec_x.device)
    # (C_out*C_in, k*k): rows in the kernel's own (NCHW) order, so no transposed copy follows
    taps = both.view(2 * nf, c_out * c_in).t() @ inverse
    return taps.view(c_out, c_in, k, k)


def with_strides(grad: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """`grad` laid out with exactly `stride`, its parameter's strides (a dense layout).

    A parameter's gradient must have the parameter's strides: autograd's own functions
    return it so, AccumulateGrad copies one of another memory order into that layout, and
    DDP's buckets expect exactly those strides (otherwise every rank warns "Grad strides do
    not match bucket view strides"). Custom backward passes return their kernel gradients
    through this: unchanged when the strides match, a view when only the strides of size-1
    dims differ (the same memory order, e.g. the contiguous gradient of a channels-last
    `(64, 1, 11, 11)` kernel, which AccumulateGrad keeps as is), else a copy into that
    layout (of a kernel's gradient: small; AccumulateGrad would make it anyway).
    """
    stride = tuple(stride)
    if grad.stride() == stride:
        return grad
    if all(a == b for a, b, n in zip(grad.stride(), stride, grad.shape, strict=True) if n != 1):
        return grad.as_strided(grad.shape, stride, grad.storage_offset())
    out = torch.empty_strided(grad.shape, stride, dtype=grad.dtype, device=grad.device)
    return out.copy_(grad)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on `device`, or None when autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


class _FFTConv2d(torch.autograd.Function):
    """`F.conv2d(x, weight, bias, padding=k // 2)` by FFT; see the section comment above."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        amp = autocast_dtype(x.device)
        mm = amp or torch.float32
        k, (h, w) = weight.shape[-1], x.shape[-2:]
        nh, nw, _ = fft_grid(h, w, k)
        with torch.autocast(x.device.type, enabled=False):
            spec_x = spectra(x, nh, nw, mm)
            blocks = kernel_blocks(weight, nh, nw, mm)
            y = frames_of_spectra(torch.bmm(spec_x, blocks), h, w, nh, nw, amp or x.dtype, bias)
        ctx.save_for_backward(spec_x, blocks)
        ctx.geometry = (h, w, k, nh, nw)
        ctx.dtypes = (x.dtype, weight.dtype)
        ctx.w_stride = weight.stride()
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        spec_x, blocks = ctx.saved_tensors
        h, w, k, nh, nw = ctx.geometry
        x_dtype, w_dtype = ctx.dtypes
        grad_x = grad_w = grad_b = None
        spec_g = spectra(grad, nh, nw, spec_x.dtype)
        if ctx.needs_input_grad[0]:  # a convolution with the kernel: G times its spectrum
            spec = torch.bmm(spec_g, blocks.transpose(1, 2))
            grad_x = frames_of_spectra(spec, h, w, nh, nw, x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = spectral_kernel_grad(spec_x, spec_g, k, nh, nw).to(w_dtype)
            grad_w = with_strides(grad_w, ctx.w_stride)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3), dtype=torch.float32).to(w_dtype)
        return grad_x, grad_w, grad_b


def fft_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=k // 2)` ('same', stride 1, odd k) computed by FFT.

    x: `(B, C_in, H, W)`; weight: `(C_out, C_in, k, k)`. Same result within float rounding
    (fp32: ~1e-6 relative); under CPU autocast the per-frequency matmuls run in bf16 and the
    output is bf16, as autocast's convolution. Pays for k >= 5 and tens of channels.
    """
    return _FFTConv2d.apply(x, weight, bias)


def fft_pays(in_channels: int, out_channels: int, kernel_size: int) -> bool:
    """Whether `fft_conv2d` beats oneDNN's direct convolution on a CPU (measured: 1.5-3x
    for 5 x 5 kernels and 128-256 channels; slower for 3 x 3 or a few channels)."""
    return kernel_size >= 5 and min(in_channels, out_channels) >= 32


def use_fft(fft: bool | str, weight: torch.Tensor, device: torch.device) -> bool:
    """Resolve a layer's `fft` setting ('auto': on the CPU where `fft_pays`)."""
    c_out, c_in, k, _ = weight.shape
    return fft is True or (fft == "auto" and device.type == "cpu" and fft_pays(c_in, c_out, k))


def conv2d_same(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fft: bool | str = "auto"
) -> torch.Tensor:
    """'same' stride-1 `conv2d` of frames `(B, C, H, W)`, by FFT where that pays on the CPU.

    fft: 'auto' (FFT on the CPU when `fft_pays`), True or False to force a path.
    """
    if use_fft(fft, weight, x.device):
        return fft_conv2d(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
