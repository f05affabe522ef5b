"""An exact sparse backward through a stack of 'same' convolutions with ReLU (the CNN
encoder): `sparse_backward_convs`.

Under a winner-take-all code the gradient of the encoder's output is nonzero only at the
winners (~0.03% of the code, <1% of the frame positions). Going back, a ReLU keeps it where
its input was > 0 and a k x k 'same' convolution spreads it to the k x k neighbourhood, so
one and two convolutions further back it still reaches only a few percent of the positions.
The backward here carries the gradient as rows at those positions only ("sites": a frame
and a pixel) and computes every kernel and bias gradient from them; frames without any
winner never appear. Exact: the skipped positions carry a zero gradient, they would add
zeros (tests/ops/test_sparse_backward.py).

Per layer it decides from the measured occupancy: once the fraction of positions that carry
gradient exceeds `SparseBackwardConvs.max_density` (a dense code: the ablations without a
spatial or lifetime step, or a classifier's gradient), the rest of the backward is the
ordinary dense one, run on the autograd graph that the forward recorded (the same ops as
without this function, e.g. the FFT convolutions). Plain torch ops only (gathers, matmuls),
so it runs on any device; `uses_sparse_backward` keeps it to the CPU, where it was measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .fftconv import with_strides

# Gathered windows are processed in chunks of about this many values (a CIFAR-sized layer,
# 25 taps x 256 channels per site, would otherwise need hundreds of MB at once).
CHUNK_VALUES = 2**21

Layer = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` within the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def uses_sparse_backward(setting: bool | str, device: torch.device) -> bool:
    """Resolve an encoder's `sparse_backward` setting: 'auto' means on the CPU only (no GPU
    benchmark has shown that the gathers beat cuDNN's dense backward), True / False force."""
    return setting is True or (setting == "auto" and device.type == "cpu")


def rows(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The channel vectors of `(B, C, H, W)` at flat positions `pos` `(P,)` (`b*H*W + y*W + x`)
    -> `(P, C)`, for either memory layout without copying the whole tensor."""
    b, c, h, w = t.shape
    if t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1, c).index_select(0, pos)
    return t.reshape(b, c, h * w)[pos // (h * w), :, pos % (h * w)]


def put_rows(values: torch.Tensor, pos: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A zero tensor shaped and laid out as `like` `(B, C, H, W)` holding `values` `(P, C)` at
    the flat positions `pos` `(P,)` (the inverse of `rows`)."""
    out = torch.zeros_like(like)
    b, c, h, w = like.shape
    if out.is_contiguous(memory_format=torch.channels_last):
        out.permute(0, 2, 3, 1).view(-1, c)[pos] = values.to(out.dtype)
    else:
        out.view(b, c, h * w)[pos // (h * w), :, pos % (h * w)] = values.to(out.dtype)
    return out


def _slot_map(pos: torch.Tensor, shape: tuple[int, int, int], p: int) -> torch.Tensor:
    """`(B, H + 2p, W + 2p)` map: the row number of each position in `pos` `(P,)`, and `P` (a
    zero row appended to the rows) at every other position and on the border."""
    b, h, w = shape
    slot = torch.full((b * h * w,), pos.numel(), dtype=torch.long, device=pos.device)
    slot[pos] = torch.arange(pos.numel(), device=pos.device)
    return F.pad(slot.view(b, h, w), (p, p, p, p), value=pos.numel())


def _windows(slot: torch.Tensor, pos: torch.Tensor, shape: tuple[int, int, int], k: int):
    """The `k x k` window of each position in `pos` `(P,)` looked up in a padded `_slot_map`
    -> `(P, k*k)` row numbers; tap `(dy, dx)` is pixel `(y + dy - k//2, x + dx - k//2)`."""
    _, h, w = shape
    hp, wp = slot.shape[1:]
    base = pos // (h * w) * (hp * wp) + pos % (h * w) // w * wp + pos % w
    d = torch.arange(k, device=pos.device)
    return slot.view(-1)[base.view(-1, 1) + (d.view(-1, 1) * wp + d).view(1, -1)]


def _reached(pos: torch.Tensor, shape: tuple[int, int, int], k: int) -> torch.Tensor:
    """The sorted flat positions within `k // 2` pixels (a k x k window) of any of `pos`."""
    b, h, w = shape
    mark = torch.zeros(b * h * w, device=pos.device)
    mark[pos] = 1.0
    if k > 1:
        mark = F.max_pool2d(mark.view(b, 1, h, w), k, 1, k // 2).view(-1)
    return mark.nonzero().squeeze(1)


def conv_backward_at(
    x: torch.Tensor, weight: torch.Tensor, pos: torch.Tensor, g: torch.Tensor, need_input: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The backward of one 'same' convolution from its output gradient's nonzero rows only.

    x: the convolution's input `(B, C_in, H, W)`; weight: `(C_out, C_in, k, k)` (odd k);
    pos: `(S,)` flat positions of the output gradient rows `g` `(S, C_out)` (zero elsewhere).
    Returns, in `g`'s dtype: the kernel gradient `(C_out, C_in, k, k)`, the bias gradient
    `(C_out,)`, the reached positions `(R,)` (within the k x k window of a site; sorted),
    the input's rows there `(R, C_in)`, and (need_input) the input gradient there `(R, C_in)`.
    """
    b, c_in, h, w = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    shape, kk = (b, h, w), k * k
    reached = _reached(pos, shape, k)
    xr = rows(x, reached).to(g.dtype)
    x_ext = torch.cat([xr, xr.new_zeros(1, c_in)])  # + a zero row for taps off the frame
    # kernel gradient: each site's output gradient times its input window
    win = _windows(_slot_map(reached, shape, k // 2), pos, shape, k)  # (S, k*k) into x_ext
    grad_w = g.new_zeros(c_out, kk * c_in)
    step = max(1, CHUNK_VALUES // (kk * c_in))
    for i in range(0, pos.numel(), step):
        patches = x_ext.index_select(0, win[i : i + step].reshape(-1)).view(-1, kk * c_in)
        grad_w.addmm_(g[i : i + step].t(), patches)
    grad_w = grad_w.view(c_out, k, k, c_in).permute(0, 3, 1, 2)
    grad_x = None
    if need_input:  # a transposed convolution: each site adds its gradient times the kernel
        # to its window (scattered from the S sites, not gathered at the R >= S positions)
        taps = weight.to(g.dtype).permute(0, 2, 3, 1).reshape(c_out, kk * c_in)
        grad_x = g.new_zeros(reached.numel() + 1, c_in)  # + the row of taps off the frame
        for i in range(0, pos.numel(), step):
            cols = (g[i : i + step] @ taps).view(-1, c_in)  # (s * k*k, C_in)
            grad_x.index_add_(0, win[i : i + step].reshape(-1), cols)
        grad_x = grad_x[:-1]
    return grad_w, g.sum(0), reached, xr, grad_x


def _dense_rest(ctx, top: int, grad: torch.Tensor, out: list) -> None:
    """The ordinary backward of layers `0..top` on the graph the forward recorded, from the
    dense gradient `(B, C, H, W)` of layer `top`'s (ReLU'd) output; fills `out`."""
    needs = ctx.needs_input_grad
    idx = [i for i in [0, *range(3, 5 + 2 * top)] if needs[i]]
    params = ctx.saved_tensors
    inputs = [ctx.acts[0] if i == 0 else params[i - 3] for i in idx]
    if inputs:
        for i, g in zip(idx, torch.autograd.grad(ctx.acts[top + 1], inputs, grad), strict=True):
            out[i] = g


class SparseBackwardConvs(torch.autograd.Function):
    """`relu(conv_n(... relu(conv_1(x))))` of frames with the sparse backward of the module
    docstring. The forward records the ordinary autograd graph (for the dense fallback) and
    keeps each layer's input; it costs nothing extra, the ReLUs keep those tensors anyway."""

    # Fraction of the positions carrying gradient above which a layer's backward runs dense:
    # the break-even on the CPU (bench/occupancy.py: 0.3 against oneDNN's direct 3 x 3
    # backward at 64 channels, 0.17 against the FFT backward at 5 x 5, 256 channels).
    max_density = 0.3
    max_density_fft = 0.15  # for a layer whose dense path is the FFT convolution
    # Under bf16 autocast oneDNN's direct backward is ~1.7x faster and the sparse one (fp32)
    # is not: its break-even is lower (Rotated MNIST wtacnn, a layer at 26%: 1.1x slower).
    max_density_bf16 = 0.15
    # Intra-op threads of the backward (None: torch's setting, as the dense ops). Its ~100
    # small gathers and matmuls each sync the thread pool, so on a CPU shared with other jobs
    # 1 can be faster (measured under load: 2 threads 3x slower than 1); on a quiet 2-core
    # CPU 2 threads made the whole step 10% faster than 1.
    threads: int | None = None

    @staticmethod
    def forward(ctx, x, layers, ffts, *params):  # type: ignore[override]
        with torch.enable_grad():
            acts = [x.detach().requires_grad_(ctx.needs_input_grad[0])]
            for layer in layers:
                acts.append(F.relu(layer(acts[-1])))
        cls = SparseBackwardConvs
        reduced = acts[-1].dtype in (torch.bfloat16, torch.float16)
        direct = cls.max_density_bf16 if reduced else cls.max_density
        ctx.limits = [cls.max_density_fft if f else direct for f in ffts]
        ctx.acts = acts
        ctx.save_for_backward(*params)
        return acts[-1].detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        out: list[torch.Tensor | None] = [None] * len(ctx.needs_input_grad)
        top = len(ctx.acts) - 2
        pos = grad.any(1).view(-1).nonzero().squeeze(1)  # any of a float: one pass, no ne
        if pos.numel() > ctx.limits[top] * grad[:, 0].numel():  # a dense code
            _dense_rest(ctx, top, grad, out)
        else:
            threads = torch.get_num_threads()  # for a dense rest
            with _threads(SparseBackwardConvs.threads):
                SparseBackwardConvs._sparse(ctx, grad, pos, out, threads)
        return tuple(out)

    @staticmethod
    def _sparse(ctx, grad: torch.Tensor, pos: torch.Tensor, out: list, threads: int) -> None:
        """The backward from the sites `pos` `(S,)` of `grad` `(B, C, H, W)`; fills `out`.
        threads: the thread count for a dense rest."""
        acts, params, needs = ctx.acts, ctx.saved_tensors, ctx.needs_input_grad
        n_pos, top = grad[:, 0].numel(), len(acts) - 2
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        g, relu_rows = rows(grad, pos).to(acc), rows(acts[-1], pos)
        for layer in range(top, -1, -1):
            # the ReLU: the gradient survives where its output is > 0; drop the rows it zeroed
            g = g * relu_rows.gt(0)
            keep = g.any(1)
            pos, g = pos[keep], g[keep]
            if pos.numel() > ctx.limits[layer] * n_pos:
                with _threads(threads):  # the dense backward with the usual threads
                    _dense_rest(ctx, layer, put_rows(g, pos, acts[layer + 1]), out)
                break
            weight, bias = params[2 * layer], params[2 * layer + 1]
            need_input = layer > 0 or needs[0]
            gw, gb, pos, relu_rows, g = conv_backward_at(acts[layer], weight, pos, g, need_input)
            if needs[3 + 2 * layer]:
                out[3 + 2 * layer] = with_strides(gw.to(weight.dtype), weight.stride())
            if bias is not None and needs[4 + 2 * layer]:
                out[4 + 2 * layer] = gb.to(bias.dtype)
            if layer == 0 and needs[0]:
                out[0] = put_rows(g, pos, acts[0])


def sparse_backward_convs(
    x: torch.Tensor,
    layers: Sequence[Layer],
    params: Sequence[torch.Tensor | None],
    ffts: Sequence[bool] | None = None,
) -> torch.Tensor:
    """`relu(layers[-1](... relu(layers[0](x))))` with the sparse backward (module docstring).

    x: frames `(B, C_in, H, W)`; layers: 'same' stride-1 convolutions of frames, layer `i`
    computed with kernel `params[2 i]` `(C_out, C_in, k, k)` and bias `params[2 i + 1]`
    `(C_out,)` or None; ffts: per layer, whether its dense path is the FFT convolution (a
    lower break-even, `max_density_fft`). Returns `(B, C_out, H, W)` as the plain stack.
    """
    ffts = tuple(ffts) if ffts is not None else (False,) * len(layers)
    return SparseBackwardConvs.apply(x, layers, ffts, *params)
