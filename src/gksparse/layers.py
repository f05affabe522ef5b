"""Building blocks for videos `(N, T, C, H, W)`: per-frame convolutions and the recurrent layer."""

from __future__ import annotations

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


class FrameConv2d(nn.Conv2d):
    """A 2-D convolution with 'same' padding applied to every frame of `(N, T, C, H, W)`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        _check_odd(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return videos(super().forward(frames(x)), x.shape[0])


class FrameConvTranspose2d(nn.ConvTranspose2d):
    """A stride-1 transposed convolution with 'same' padding applied to every frame."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        _check_odd(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return videos(super().forward(frames(x)), x.shape[0])


class ConvMinimalRNN2d(nn.Module):
    """Convolutional minimal RNN over `(N, T, C, H, W)`, returning every state `h_1..h_T`.

    u_t = sigmoid(conv(x_t, weight) + bias + conv(h_{t-1}, recurrent_weight))
    h_t = (1 - u_t) * h_{t-1} + u_t * x_t

    Both kernels map `C -> C` channels with 'same' padding. The input convolution does not
    depend on the state, so it runs over all frames in one call; only the state term loops.
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
        pad = self.kernel_size // 2
        wx = videos(F.conv2d(frames(x), self.weight, self.bias, padding=pad), x.shape[0])
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
