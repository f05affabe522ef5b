"""Per-frame layers for videos `(N, T, C, H, W)`: `FrameConv2d` (the encoder's
convolutions) and `FrameConvTranspose2d` (the decoder); the recurrent layer is in
`gksparse.model.recurrence`.

Besides the plain computation, exact fast paths for the CPU (same results within float
rounding, tested against the plain ones; each layer has a switch to turn its path off):
- convolutions with k >= 5 and many channels are computed with FFTs: one matmul per
  frequency instead of k * k per pixel (`gksparse.ops.fftconv`, `FrameConv2d.fft`);
- the decoder of a winner-take-all code adds its kernel only at the code's nonzero pixels
  (`gksparse.ops.sparseconv.sparse_conv_transpose2d`, `FrameConvTranspose2d.sparse`);
- the last encoder convolution's backward uses only the pixels its gradient reaches, the
  winners (`FrameConv2d.sparse_grad`); under a WTA code the CNN encoder's whole backward
  does (`gksparse.ops.sparsebackward`, `ConvEncoder.sparse_backward`);
- the recurrence is one autograd node with a hand-written backward through time
  (`gksparse.model.recurrence`, `ConvMinimalRNN2d.fused`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.fftconv import conv2d_same, use_fft
from ..ops.sparseconv import _SparseGradConv2d, occupied_sites, sparse_conv_transpose2d


def check_odd(kernel_size: int, what: str) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"{what} must be a positive odd number for 'same' padding, got {kernel_size}."
        )


def glorot(layer: nn.Module) -> None:
    """The reference's initialisation (Keras' default): Glorot-uniform kernel, zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def frames(x: torch.Tensor) -> torch.Tensor:
    """`(N, T, C, H, W)` -> `(N*T, C, H, W)`: a batch of frames (a view where possible)."""
    return x.flatten(0, 1)


def videos(x: torch.Tensor, n: int) -> torch.Tensor:
    """`(N*T, C, H, W)` -> `(N, T, C, H, W)`, the inverse of `frames`."""
    return x.unflatten(0, (n, -1))


def uses_fft(module: nn.Module, device: str | torch.device = "cpu") -> bool:
    """Whether any convolution of `module` runs by FFT on `device` (then keep NCHW frames:
    the FFT path reads them; otherwise channels-last suits oneDNN's direct convolutions).
    Looks at every submodule with an `fft` setting (`FrameConv2d`, `ConvMinimalRNN2d`)."""
    device = torch.device(device)
    return any(
        use_fft(m.fft, m.weight, device)
        for m in module.modules()
        if isinstance(getattr(m, "fft", None), bool | str)
    )


class FrameConv2d(nn.Conv2d):
    """A 2-D convolution with 'same' padding applied to every frame of `(N, T, C, H, W)`.

    `fft`: 'auto' (default) computes it by FFT on the CPU where that pays (`fft_pays`),
    True / False force a path. `sparse_grad`: when the gradient of the output reaches only
    a few pixels, the backward uses only those (`_SparseGradConv2d`; direct path only).
    Same results within float rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        check_odd(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        glorot(self)
        self.fft: bool | str = "auto"
        self.sparse_grad = False  # see `_SparseGradConv2d`; set on a WTA code's last layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return videos(self.forward_frames(frames(x)), x.shape[0])

    def forward_frames(self, f: torch.Tensor) -> torch.Tensor:
        """The convolution of a batch of frames `(B, C_in, H, W)` -> `(B, C_out, H, W)`."""
        fft = use_fft(self.fft, self.weight, f.device)
        if not fft and self.sparse_grad and f.device.type == "cpu" and torch.is_grad_enabled():
            return _SparseGradConv2d.apply(f, self.weight, self.bias)
        return conv2d_same(f, self.weight, self.bias, fft)


class FrameConvTranspose2d(nn.ConvTranspose2d):
    """A stride-1 transposed convolution with 'same' padding applied to every frame.

    `sparse`: 'auto' (default) runs `sparse_conv_transpose2d` on the CPU when at most
    `max_density` of the pixels carry a nonzero channel (a winner-take-all code), the dense
    kernel otherwise; True / False force one path. Same results within float rounding;
    the sparse path's input gradient is zero off the occupied pixels (or off those of the
    `occupied` mask given to `forward`), where a sparse code comes from a mask that discards
    it.
    """

    max_density = 0.5  # fraction of occupied pixels up to which 'auto' goes sparse

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        check_odd(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        glorot(self)
        self.sparse: bool | str = "auto"

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, occupied: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: `(N, T, C_in, H, W)`; occupied: bool `(N, T, K, H, W)` whose any over K is True
        at least wherever `x` has a nonzero channel (a WTA keep mask, K its channels or
        groups), to find the occupied pixels without a pass over `x`. Returns
        `(N, T, C_out, H, W)`."""
        f = frames(x)
        if self.sparse is True or (self.sparse == "auto" and f.device.type == "cpu"):
            sites = occupied_sites(f if occupied is None else frames(occupied))
            total = f.shape[0] * f.shape[2] * f.shape[3]
            if self.sparse is True or sites[0].numel() <= self.max_density * total:
                return videos(sparse_conv_transpose2d(f, self.weight, self.bias, sites), x.shape[0])
        return videos(super().forward(f), x.shape[0])
