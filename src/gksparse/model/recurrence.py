"""The convolutional minimal RNN (METHOD.md section 3): `ConvMinimalRNN2d`, with its
recurrence fused into one autograd node with a hand-written backward through time
(`_MinimalRNN`), checked against plain autograd in tests/test_recurrence.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.fftconv import (
    conv2d_same,
    fft_grid,
    frames_of_spectra,
    kernel_blocks,
    spectra,
    spectral_kernel_grad,
    use_fft,
    with_strides,
)
from .layers import check_odd, frames, videos


class StateConv:
    """conv(h, U) of one sequence: per step forward and input gradient, and the kernel's
    gradient once at the end from all steps (one big product instead of T small ones).

    steps: how many forward calls the sequence makes (and as many `input_grad` calls in
    reverse order); with `record` on the FFT path, their spectra go straight into one
    buffer each, in step order, for `kernel_grad`.
    """

    def __init__(
        self, weight: torch.Tensor, dtype: torch.dtype, fft: bool, hw: tuple[int, int], steps: int
    ) -> None:
        self.k, self.fft, self.dtype, self.hw = weight.shape[-1], fft, dtype, hw
        self.weight = weight.detach().to(dtype)
        self.steps = steps
        self.record = False  # FFT: keep the spectra for `kernel_grad`
        if fft:
            self.nh, self.nw, self.nf = fft_grid(*hw, self.k)
            self.blocks = kernel_blocks(weight, self.nh, self.nw, dtype)
        self.spec_h: torch.Tensor | None = None  # FFT: spectra of the states, step order
        self.spec_g: torch.Tensor | None = None  # FFT: spectra of the gradients, step order
        self.calls_h = self.calls_g = 0

    def _slot(self, buffer: torch.Tensor | None, x: torch.Tensor, step: int):
        """(buffer, the `(F, N, 2C)` slice of `step` to write a spectrum of `x` into)."""
        n, c = x.shape[:2]
        if buffer is None:
            buffer = torch.empty(self.nf, self.steps * n, 2 * c, dtype=self.dtype, device=x.device)
        return buffer, buffer[:, step * n : (step + 1) * n]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if not self.fft:
            return F.conv2d(h, self.weight, padding=self.k // 2)
        slot = None
        if self.record:
            self.spec_h, slot = self._slot(self.spec_h, h, self.calls_h)
            self.calls_h += 1
        spec = spectra(h, self.nh, self.nw, self.dtype, out=slot)
        out = torch.bmm(spec, self.blocks)
        return frames_of_spectra(out, *self.hw, self.nh, self.nw, self.dtype)

    def input_grad(self, g: torch.Tensor) -> torch.Tensor:
        """Gradient w.r.t. the step's state; call in reverse order of the forward calls."""
        if not self.fft:
            return F.conv_transpose2d(g, self.weight, padding=self.k // 2)
        slot = None
        if self.record:
            step = self.steps - 1 - self.calls_g
            self.spec_g, slot = self._slot(self.spec_g, g, step)
            self.calls_g += 1
        spec = spectra(g, self.nh, self.nw, self.dtype, out=slot)
        out = torch.bmm(spec, self.blocks.transpose(1, 2))
        return frames_of_spectra(out, *self.hw, self.nh, self.nw, self.dtype)

    def kernel_grad(self, states: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """fp32 gradient of U from frames of input states and of output gradients,
        `(K, C, H, W)` each, paired in order (the FFT path uses the spectra it kept)."""
        if self.fft:
            if self.calls_h != self.steps or self.calls_g != self.steps:
                raise RuntimeError("kernel_grad needs `steps` recorded calls each way")
            return spectral_kernel_grad(self.spec_h, self.spec_g, self.k, self.nh, self.nw)
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
            steps = x.shape[1] - (h is None)  # h_0 = 0 skips the first state convolution
            conv = StateConv(weight, dtype, fft, tuple(x.shape[-2:]), steps)
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
        ctx.weight_stride = weight.stride()
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, gates, out, h0_in = ctx.saved_tensors
        conv: StateConv = ctx.conv
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
            grad_w = with_strides(grad_w.to(ctx.weight_dtype), ctx.weight_stride)
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
        check_odd(kernel_size, "kernel_size")
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
            fft = use_fft(self.fft, u, x.device)
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
