"""Building blocks for videos `(N, T, C, H, W)`: per-frame convolutions and the recurrent layer.

Besides the plain layers, exact fast paths for the CPU (same results within float rounding,
tested against the plain ones in tests/test_speed.py; each layer has a switch to turn its
path off):
- convolutions with k >= 5 and many channels are computed with FFTs: one matmul per
  frequency instead of k * k per pixel (`fft_conv2d`, `FrameConv2d.fft`);
- the decoder of a winner-take-all code adds its kernel only at the code's nonzero pixels
  (`sparse_conv_transpose2d`, `FrameConvTranspose2d.sparse`);
- the last encoder convolution's backward uses only the pixels its gradient reaches, the
  winners (`FrameConv2d.sparse_grad`);
- the recurrence is one autograd node with a hand-written backward through time, the state
  kernel's gradient one product over all steps (`ConvMinimalRNN2d.fused`).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_odd(kernel_size: int, what: str) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"{what} must be a positive odd number for 'same' padding, got {kernel_size}."
        )


def frames(x: torch.Tensor) -> torch.Tensor:
    """`(N, T, C, H, W)` -> `(N*T, C, H, W)`: a batch of frames (a view where possible)."""
    return x.flatten(0, 1)


def videos(x: torch.Tensor, n: int) -> torch.Tensor:
    """`(N*T, C, H, W)` -> `(N, T, C, H, W)`, the inverse of `frames`."""
    return x.unflatten(0, (n, -1))


# -- convolution by FFT -------------------------------------------------------------------
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


def _grid(h: int, w: int, k: int) -> tuple[int, int, int]:
    """(Nh, Nw, number of frequencies) of the FFT grid for H x W frames and a k x k kernel."""
    nh, nw = h + k - 1, w + k - 1
    return nh, nw, nh * (nw // 2 + 1)


def _spectra(x: torch.Tensor, nh: int, nw: int, dtype: torch.dtype) -> torch.Tensor:
    """`(B, C, H, W)` -> planar spectra `(F, B, 2C)` in `dtype` (two cheap transposes)."""
    b, c = x.shape[:2]
    z = torch.view_as_real(torch.fft.rfft2(x.float(), s=(nh, nw))).reshape(b, c, -1)
    t = z.transpose(1, 2).contiguous()  # (B, 2F, C): batched 2-D transposes
    nf = t.shape[1] // 2
    out = torch.empty(nf, b, 2, c, dtype=dtype, device=x.device)
    out.copy_(t.view(b, nf, 2, c).transpose(0, 1))  # whole rows of C
    return out.view(nf, b, 2 * c)


def _frames_of(
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
    t = torch.empty(b, nf, 2, c, dtype=torch.float32, device=spec.device)
    t.copy_(spec.view(nf, b, 2, c).transpose(0, 1))
    z = t.view(b, 2 * nf, c).transpose(1, 2).contiguous().view(b, c, nh, m, 2)
    z = torch.view_as_complex(z)
    if bias is not None:  # a constant image is its DC bin, times the grid size
        z[:, :, 0, 0] += bias.float() * (nh * nw)
    y = torch.fft.irfft2(z, s=(nh, nw))[..., :h, :w]
    return torch.empty(y.shape, dtype=dtype, device=y.device).copy_(y)


def _kernel_blocks(weight: torch.Tensor, nh: int, nw: int, dtype: torch.dtype) -> torch.Tensor:
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


def _kernel_grad(
    spec_x: torch.Tensor, spec_g: torch.Tensor, k: int, nh: int, nw: int
) -> torch.Tensor:
    """Gradient `(C_out, C_in, k, k)` (fp32) of a correlation from its input and output
    gradient spectra (`(F, K, 2C_in)`, `(F, K, 2C_out)`; K frames, summed)."""
    nf, _, c2_in = spec_x.shape
    c_in, c_out = c2_in // 2, spec_g.shape[2] // 2
    prod = torch.bmm(spec_x.transpose(1, 2), spec_g).view(nf, 2, c_in, 2, c_out)
    # sum over frames of conj(G) X: re = Xr Gr + Xi Gi, im = Xi Gr - Xr Gi
    both = torch.empty(2, nf, c_in, c_out, device=spec_x.device)
    both[0].copy_(prod[:, 0, :, 0]).add_(prod[:, 1, :, 1])
    both[1].copy_(prod[:, 1, :, 0]).sub_(prod[:, 0, :, 1])
    _, inverse = _dft_matrices(k, nh, nw, spec_x.device)
    taps = inverse.t() @ both.view(2 * nf, c_in * c_out)  # (k*k, C_in*C_out)
    return taps.view(k, k, c_in, c_out).permute(3, 2, 0, 1)


def _matmul_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on `device`, or None when autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


class _FFTConv2d(torch.autograd.Function):
    """`F.conv2d(x, weight, bias, padding=k // 2)` by FFT; see the section comment above."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        amp = _matmul_dtype(x.device)
        mm = amp or torch.float32
        k, (h, w) = weight.shape[-1], x.shape[-2:]
        nh, nw, _ = _grid(h, w, k)
        with torch.autocast(x.device.type, enabled=False):
            spec_x = _spectra(x, nh, nw, mm)
            blocks = _kernel_blocks(weight, nh, nw, mm)
            y = _frames_of(torch.bmm(spec_x, blocks), h, w, nh, nw, amp or x.dtype, bias)
        ctx.save_for_backward(spec_x, blocks)
        ctx.geometry = (h, w, k, nh, nw)
        ctx.dtypes = (x.dtype, weight.dtype)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        spec_x, blocks = ctx.saved_tensors
        h, w, k, nh, nw = ctx.geometry
        x_dtype, w_dtype = ctx.dtypes
        grad_x = grad_w = grad_b = None
        spec_g = _spectra(grad, nh, nw, spec_x.dtype)
        if ctx.needs_input_grad[0]:  # a convolution with the kernel: G times its spectrum
            grad_x = _frames_of(torch.bmm(spec_g, blocks.transpose(1, 2)), h, w, nh, nw, x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _kernel_grad(spec_x, spec_g, k, nh, nw).to(w_dtype)
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


def _use_fft(fft: bool | str, weight: torch.Tensor, device: torch.device) -> bool:
    """Resolve a layer's `fft` setting ('auto': on the CPU where `fft_pays`)."""
    c_out, c_in, k, _ = weight.shape
    return fft is True or (fft == "auto" and device.type == "cpu" and fft_pays(c_in, c_out, k))


def conv2d_same(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fft: bool | str = "auto"
) -> torch.Tensor:
    """'same' stride-1 `conv2d` of frames `(B, C, H, W)`, by FFT where that pays on the CPU.

    fft: 'auto' (FFT on the CPU when `fft_pays`), True or False to force a path.
    """
    if _use_fft(fft, weight, x.device):
        return fft_conv2d(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


def uses_fft(module: nn.Module, device: str | torch.device = "cpu") -> bool:
    """Whether any convolution of `module` runs by FFT on `device` (then keep NCHW frames:
    the FFT path reads them; otherwise channels-last suits oneDNN's direct convolutions)."""
    device = torch.device(device)
    return any(
        _use_fft(m.fft, m.weight, device)
        for m in module.modules()
        if isinstance(m, FrameConv2d | ConvMinimalRNN2d)
    )


class FrameConv2d(nn.Conv2d):
    """A 2-D convolution with 'same' padding applied to every frame of `(N, T, C, H, W)`.

    `fft`: 'auto' (default) computes it by FFT on the CPU where that pays (`fft_pays`),
    True / False force a path. `sparse_grad`: when the gradient of the output reaches only
    a few pixels, the backward uses only those (`_SparseGradConv2d`; direct path only).
    Same results within float rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        _check_odd(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)
        self.fft: bool | str = "auto"
        self.sparse_grad = False  # see `_SparseGradConv2d`; set on a WTA code's last layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = frames(x)
        fft = _use_fft(self.fft, self.weight, f.device)
        if not fft and self.sparse_grad and f.device.type == "cpu" and torch.is_grad_enabled():
            return videos(_SparseGradConv2d.apply(f, self.weight, self.bias), x.shape[0])
        return videos(conv2d_same(f, self.weight, self.bias, fft), x.shape[0])


# -- the sparse decoder -------------------------------------------------------------------
# A transposed convolution of a code whose entries are mostly zero adds `value * kernel` at
# every nonzero entry. Gathering the occupied positions ("sites": a frame and a pixel with
# any nonzero channel) and doing one small matmul per pass does the same arithmetic as the
# dense kernel on a few percent of the positions.


def _site_patches(
    b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, out_shape: tuple[int, ...], k: int
) -> torch.Tensor:
    """Flat indices `(S, C_out*k*k)` of the `k x k` window of each site in a padded output.

    out_shape: `(B, C_out, H + k - 1, W + k - 1)`, the output padded by `k // 2` per side, so
    the window of the site at pixel `(y, x)` starts at padded pixel `(y, x)`.
    """
    _, c_out, hp, wp = out_shape
    dev = b.device
    offs = (
        torch.arange(c_out, device=dev).view(-1, 1, 1) * (hp * wp)
        + torch.arange(k, device=dev).view(1, -1, 1) * wp
        + torch.arange(k, device=dev).view(1, 1, -1)
    ).view(1, -1)
    base = b * (c_out * hp * wp) + y * wp + x
    return base.view(-1, 1) + offs


def _accumulation_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


class _SparseConvTranspose2d(torch.autograd.Function):
    """Stride-1 'same' transposed convolution of `(B, C_in, H, W)` frames, computed at sites.

    Exact at every output pixel. The gradient w.r.t. the input is exact at the sites (all
    channels of every occupied pixel) and zero elsewhere: everywhere else the input is zero
    because a winner-take-all mask zeroed it, so the mask's backward discards it anyway.
    Computes in fp32 (also under autocast; fp64 stays fp64) and returns that dtype.
    """

    @staticmethod
    def forward(ctx, inp, weight, bias, sites):  # type: ignore[override]
        b, y, x = sites
        k = weight.shape[-1]
        c_in, c_out = weight.shape[0], weight.shape[1]
        n, _, h, w = inp.shape
        acc = _accumulation_dtype(weight)
        with torch.autocast(inp.device.type, enabled=False):
            values = inp.permute(0, 2, 3, 1)[b, y, x].to(acc)  # (S, C_in)
            wmat = weight.to(acc).reshape(c_in, c_out * k * k)
            padded = (n, c_out, h + k - 1, w + k - 1)
            index = _site_patches(b, y, x, padded, k)
            out = inp.new_zeros(padded, dtype=acc)
            out.view(-1).index_add_(0, index.view(-1), (values @ wmat).view(-1))
            p = k // 2
            out = out[:, :, p : p + h, p : p + w]
            if bias is not None:
                out = out + bias.to(acc).view(1, -1, 1, 1)
        ctx.save_for_backward(values, weight, index, b, y, x)
        ctx.meta = (inp.shape, inp.dtype, inp.is_contiguous(memory_format=torch.channels_last))
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        values, weight, index, b, y, x = ctx.saved_tensors
        shape, dtype, nhwc = ctx.meta
        k, c_in = weight.shape[-1], weight.shape[0]
        grad_in = grad_w = grad_b = None
        with torch.autocast(grad_out.device.type, enabled=False):
            grad_out = grad_out.to(values.dtype)
            p = k // 2
            cols = F.pad(grad_out, (p, p, p, p)).reshape(-1)[index]  # (S, C_out*k*k)
            wmat = weight.to(values.dtype).reshape(c_in, -1)
            if ctx.needs_input_grad[0]:
                fmt = torch.channels_last if nhwc else torch.contiguous_format
                grad_in = torch.empty(shape, dtype=dtype, device=grad_out.device, memory_format=fmt)
                grad_in.zero_().permute(0, 2, 3, 1)[b, y, x] = (cols @ wmat.t()).to(dtype)
            if ctx.needs_input_grad[1]:
                grad_w = (values.t() @ cols).view(weight.shape).to(weight.dtype)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = grad_out.sum(dim=(0, 2, 3)).to(weight.dtype)
        return grad_in, grad_w, grad_b, None


class _SparseGradConv2d(torch.autograd.Function):
    """'same' `F.conv2d` whose backward uses only the pixels where the output gradient is
    nonzero, when they are few (the last encoder convolution under a winner-take-all code:
    the gradient reaches only the winners). Exact: the other pixels contribute zeros.
    Otherwise (a dense gradient) the usual backward."""

    max_density = 0.25  # fraction of occupied pixels up to which the sparse backward runs

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        ctx.dtypes = (x.dtype, weight.dtype)
        dtype = _matmul_dtype(x.device) or x.dtype  # what the convolution computes in
        x, weight = x.to(dtype), weight.to(dtype)
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        c_out, c_in, k, _ = weight.shape
        p = k // 2
        sites = occupied_sites(grad)
        n, _, h, w = grad.shape
        if sites[0].numel() > _SparseGradConv2d.max_density * n * h * w:
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias]
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad.to(x.dtype), x, weight, [c_out] if ctx.has_bias else None,
                [1, 1], [p, p], [1, 1], False, [0, 0], 1, mask,
            )  # fmt: skip
            gx = None if gx is None else gx.to(x_dtype)
            gw = None if gw is None else gw.to(w_dtype)
            gb = None if gb is None else gb.to(w_dtype)
            return gx, gw, gb
        b, y, xx = sites
        acc = _accumulation_dtype(weight)
        values = grad.permute(0, 2, 3, 1)[b, y, xx].to(acc)  # (S, C_out)
        # the k*k neighbours of every site: pixel (y + dy - p, x + dx - p), if inside
        d = torch.arange(k, device=grad.device) - p
        ny = (y.view(-1, 1, 1) + d.view(1, -1, 1)).expand(-1, k, k)
        nx = (xx.view(-1, 1, 1) + d.view(1, 1, -1)).expand(-1, k, k)
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)  # (S, k, k)
        nb = b.view(-1, 1, 1).expand(-1, k, k)[inside]
        ny, nx = ny[inside], nx[inside]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:  # each site's output gradient times its input window
            patches = values.new_zeros(inside.shape + (c_in,))  # (S, k, k, C_in)
            patches[inside] = x.permute(0, 2, 3, 1)[nb, ny, nx].to(acc)
            grad_w = values.t() @ patches.view(values.shape[0], -1)
            grad_w = grad_w.view(c_out, k, k, c_in).permute(0, 3, 1, 2).to(w_dtype)
        if ctx.needs_input_grad[0]:  # a transposed convolution of the sparse gradient
            taps = weight.to(acc).permute(0, 2, 3, 1).reshape(c_out, -1)  # (C_out, k*k*C_in)
            cols = (values @ taps).view(inside.shape + (c_in,))[inside]  # (valid, C_in)
            pixel = (nb * h + ny) * w + nx
            pixels, where = torch.unique(pixel, return_inverse=True)
            sums = cols.new_zeros(pixels.numel(), c_in).index_add_(0, where, cols)
            grad_x = torch.zeros_like(x, dtype=x_dtype)  # in x's layout
            where_b, where_y, where_x = pixels // (h * w), pixels // w % h, pixels % w
            grad_x.permute(0, 2, 3, 1)[where_b, where_y, where_x] = sums.to(x_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = values.sum(dim=0).to(w_dtype)  # the gradient is zero off the sites
        return grad_x, grad_w, grad_b


def occupied_sites(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame, row and column indices of the pixels of `(B, C, H, W)` with any nonzero channel."""
    return x.any(dim=1).nonzero(as_tuple=True)


def sparse_conv_transpose2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    sites: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`F.conv_transpose2d(x, weight, bias, padding=k // 2)` for a mostly zero `x`.

    x: `(B, C_in, H, W)`; weight: `(C_in, C_out, k, k)` with odd `k`; sites: the
    `occupied_sites(x)` if already known. Returns `(B, C_out, H, W)` in fp32 (fp64 for an
    fp64 weight), also under autocast; the gradient
    w.r.t. `x` is computed only at the sites (see `_SparseConvTranspose2d`).
    """
    if sites is None:
        sites = occupied_sites(x)
    return _SparseConvTranspose2d.apply(x, weight, bias, sites)


class FrameConvTranspose2d(nn.ConvTranspose2d):
    """A stride-1 transposed convolution with 'same' padding applied to every frame.

    `sparse`: 'auto' (default) runs `sparse_conv_transpose2d` on the CPU when at most
    `max_density` of the pixels carry a nonzero channel (a winner-take-all code), the dense
    kernel otherwise; True / False force one path. Same results within float rounding;
    the sparse path's input gradient is zero off the occupied pixels, where a sparse code
    comes from a mask that discards it.
    """

    max_density = 0.5  # fraction of occupied pixels up to which 'auto' goes sparse

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        _check_odd(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)
        self.sparse: bool | str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        f = frames(x)
        if self.sparse is True or (self.sparse == "auto" and f.device.type == "cpu"):
            sites = occupied_sites(f)
            pixels = f.shape[0] * f.shape[2] * f.shape[3]
            if self.sparse is True or sites[0].numel() <= self.max_density * pixels:
                return videos(sparse_conv_transpose2d(f, self.weight, self.bias, sites), x.shape[0])
        return videos(super().forward(f), x.shape[0])


# -- the recurrence ------------------------------------------------------------------------
class _StateConv:
    """conv(h, U) of one sequence: per step forward and input gradient, and the kernel's
    gradient once at the end from all steps (one big product instead of T small ones)."""

    def __init__(
        self, weight: torch.Tensor, dtype: torch.dtype, fft: bool, hw: tuple[int, int]
    ) -> None:
        self.k, self.fft, self.dtype, self.hw = weight.shape[-1], fft, dtype, hw
        self.weight = weight.detach().to(dtype)
        self.record = False  # FFT: keep the states' spectra for `kernel_grad`
        if fft:
            self.nh, self.nw, _ = _grid(*hw, self.k)
            self.blocks = _kernel_blocks(weight, self.nh, self.nw, dtype)
        self.spec_h: list[torch.Tensor] = []  # FFT: spectra of the states, forward order
        self.spec_g: list[torch.Tensor] = []  # FFT: spectra of the gradients, backward order

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if not self.fft:
            return F.conv2d(h, self.weight, padding=self.k // 2)
        spec = _spectra(h, self.nh, self.nw, self.dtype)
        if self.record:
            self.spec_h.append(spec)
        return _frames_of(torch.bmm(spec, self.blocks), *self.hw, self.nh, self.nw, self.dtype)

    def input_grad(self, g: torch.Tensor) -> torch.Tensor:
        """Gradient w.r.t. the step's state; call in reverse order of the forward calls."""
        if not self.fft:
            return F.conv_transpose2d(g, self.weight, padding=self.k // 2)
        spec = _spectra(g, self.nh, self.nw, self.dtype)
        self.spec_g.append(spec)
        out = torch.bmm(spec, self.blocks.transpose(1, 2))
        return _frames_of(out, *self.hw, self.nh, self.nw, self.dtype)

    def kernel_grad(self, states: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """fp32 gradient of U from frames of input states and of output gradients,
        `(K, C, H, W)` each, paired in order (the FFT path uses the spectra it kept)."""
        if self.fft:
            spec_h = torch.cat(self.spec_h, dim=1)
            spec_g = torch.cat(self.spec_g[::-1], dim=1)
            return _kernel_grad(spec_h, spec_g, self.k, self.nh, self.nw)
        p = self.k // 2
        return torch.ops.aten.convolution_backward(
            grads, states, self.weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
            [False, True, False],
        )[1].float()  # fmt: skip


class _MinimalRNN(torch.autograd.Function):
    """The ConvMinimalRNN2d recurrence given the input term `wx = conv(x, W) + b`.

    Backward through time by hand: per step only elementwise work and the state
    convolution's input gradient; U's gradient is one product over all steps. Runs in the
    dtype of `wx` (bf16 under autocast, as the autograd version would).
    """

    @staticmethod
    def forward(ctx, x, wx, weight, h0, fft, train):  # type: ignore[override]
        dtype = wx.dtype
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype)
            h = None if h0 is None else h0.to(dtype)
            conv = _StateConv(weight, dtype, fft, tuple(x.shape[-2:]))
            conv.record = train and ctx.needs_input_grad[2]  # U's gradient will be needed
            out = torch.empty_like(x)  # x's layout (NCHW or channels-last frames)
            gates = torch.empty_like(x) if train else None  # kept for the backward pass
            for i in range(x.shape[1]):
                pre = wx[:, i] if h is None else wx[:, i] + conv(h)
                u = torch.sigmoid(pre) if gates is None else torch.sigmoid(pre, out=gates[:, i])
                if h is None:
                    h = torch.mul(u, x[:, i], out=out[:, i])
                else:
                    h = torch.addcmul(h, u, x[:, i] - h, out=out[:, i])
        ctx.conv = conv
        ctx.save_for_backward(x, gates, out, h0)
        ctx.weight_dtype = weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, gates, out, h0_in = ctx.saved_tensors
        conv: _StateConv = ctx.conv
        ctx.conv = None
        dtype = gates.dtype
        grad_out = grad_out.to(dtype)
        t = x.shape[1]
        h0 = None if h0_in is None else h0_in.to(dtype)
        grad_x, grad_wx = torch.empty_like(x), torch.empty_like(gates)
        dh = None  # gradient w.r.t. h_i from the later steps
        for i in reversed(range(t)):
            g = grad_out[:, i] if dh is None else dh.add_(grad_out[:, i])
            u, x_i = gates[:, i], x[:, i]
            h_prev = out[:, i - 1] if i else h0
            torch.mul(u, g, out=grad_x[:, i])  # h_i = h_prev + u (x_i - h_prev)
            du = g * x_i if h_prev is None else g * (x_i - h_prev)
            pre = torch.ops.aten.sigmoid_backward(du, u)  # du * u * (1 - u)
            grad_wx[:, i] = pre
            if h_prev is not None:
                dh = torch.addcmul(g, g, u, value=-1).add_(conv.input_grad(pre))
        grad_w = grad_h0 = None
        if h0 is not None:
            grad_h0 = dh.to(h0_in.dtype)
        if ctx.needs_input_grad[2] and (t > 1 or h0 is not None):
            if conv.fft:
                grad_w = conv.kernel_grad(None, None)
            elif h0 is None:
                # Steps 2..T convolve h_1..h_{T-1}: pair frame j of `out` with frame j + 1 of
                # `grad_wx`, both flat views (no copies), then take out the N - 1 pairs that
                # cross from one video's last frame to the next one's first.
                n = x.shape[0]
                grad_w = conv.kernel_grad(frames(out)[:-1], frames(grad_wx)[1:])
                if n > 1:
                    grad_w -= conv.kernel_grad(out[:-1, -1], grad_wx[1:, 0])
            else:
                states = torch.cat([h0.unsqueeze(1), out[:, :-1]], dim=1)
                grad_w = conv.kernel_grad(frames(states), frames(grad_wx))
            grad_w = grad_w.to(ctx.weight_dtype)
        return grad_x, grad_wx, grad_w, grad_h0, None, None


class ConvMinimalRNN2d(nn.Module):
    """Convolutional minimal RNN over `(N, T, C, H, W)`, returning every state `h_1..h_T`.

    u_t = sigmoid(conv(x_t, weight) + bias + conv(h_{t-1}, recurrent_weight))
    h_t = (1 - u_t) * h_{t-1} + u_t * x_t

    Both kernels map `C -> C` channels with 'same' padding. The input convolution does not
    depend on the state, so it runs over all frames in one call; only the state term loops.
    `fused` (default True) runs the loop as one autograd node with a hand-written backward
    through time (`_MinimalRNN`); False uses plain autograd, the reference. `fft` as in
    `FrameConv2d`.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        _check_odd(kernel_size, "kernel_size")
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))
        self.recurrent_weight = nn.Parameter(
            torch.empty(channels, channels, kernel_size, kernel_size)
        )
        self.reset_parameters()
        self.fused = True
        self.fft: bool | str = "auto"

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.orthogonal_(self.recurrent_weight)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """x: `(N, T, C, H, W)`; h0: `(N, C, H, W)` or None (zeros). Returns `(N, T, C, H, W)`."""
        if x.ndim != 5 or x.shape[2] != self.channels:
            raise ValueError(
                f"ConvMinimalRNN2d({self.channels}) expects (N, T, {self.channels}, H, W), "
                f"got {tuple(x.shape)}."
            )
        wx = videos(conv2d_same(frames(x), self.weight, self.bias, self.fft), x.shape[0])
        if self.fused:
            u = self.recurrent_weight
            fft = _use_fft(self.fft, u, x.device)
            train = torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (x, wx, u, h0)
            )
            return _MinimalRNN.apply(x, wx, u, h0, fft, train)
        pad = self.kernel_size // 2
        h = h0
        states = []
        # unbind, not wx[:, t]: slicing makes backward build a full-size zero gradient per step.
        for x_t, wx_t in zip(x.unbind(1), wx.unbind(1), strict=True):
            if h is None:  # h_0 = 0: the state convolution vanishes, exactly
                h = torch.sigmoid(wx_t) * x_t
            else:
                u = torch.sigmoid(wx_t + F.conv2d(h, self.recurrent_weight, padding=pad))
                h = h + u * (x_t - h)
            states.append(h)
        return torch.stack(states, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
