"""Convolutions of winner-take-all codes computed only where the code (or the gradient)
is nonzero: the sparse decoder (`sparse_conv_transpose2d`) and the last encoder
convolution's sparse backward (`_SparseGradConv2d`). Exact: the skipped pixels contribute
zeros (tests/test_sparseconv.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fftconv import autocast_dtype, with_strides

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
            if ctx.needs_input_grad[1]:  # (C_in, C_out, k, k) contiguous, then weight's strides
                grad_w = (values.t() @ cols).view(weight.shape).to(weight.dtype)
                grad_w = with_strides(grad_w, weight.stride())
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
        ctx.w_stride = weight.stride()
        dtype = autocast_dtype(x.device) or x.dtype  # what the convolution computes in
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
            gw = None if gw is None else with_strides(gw.to(w_dtype), ctx.w_stride)
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
            grad_w = values.t() @ patches.view(values.shape[0], k * k * c_in)  # S may be 0
            # channels-last memory order; the weight's own strides if it is NCHW (a copy)
            grad_w = grad_w.view(c_out, k, k, c_in).permute(0, 3, 1, 2).to(w_dtype)
            grad_w = with_strides(grad_w, ctx.w_stride)
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
