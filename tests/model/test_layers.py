"""The per-frame convolutions against plain per-frame loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tensors import seeded

from gksparse.model.layers import (
    FrameConv2d,
    FrameConvTranspose2d,
    frames,
    videos,
)


def test_frames_and_videos_are_inverse():
    x = seeded(2, 3, 4, 5, 6)
    f = frames(x)
    assert f.shape == (6, 4, 5, 6)
    assert torch.equal(f[4], x[1, 1])  # frame order: sample-major, then time
    assert torch.equal(videos(f, 2), x)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_frame_conv_is_a_per_frame_same_conv(kernel_size):
    torch.manual_seed(0)
    conv = FrameConv2d(2, 4, kernel_size)
    x = seeded(2, 3, 2, 5, 7)
    out = conv(x)
    assert out.shape == (2, 3, 4, 5, 7)
    for n in range(2):
        for t in range(3):
            want = F.conv2d(x[n, t : t + 1], conv.weight, conv.bias, padding=kernel_size // 2)
            torch.testing.assert_close(out[n, t : t + 1], want)


@pytest.mark.parametrize("kernel_size", [1, 3, 7, 11])
def test_frame_conv_transpose_is_a_per_frame_same_transposed_conv(kernel_size):
    torch.manual_seed(0)
    deconv = FrameConvTranspose2d(4, 1, kernel_size)
    with torch.no_grad():
        deconv.bias.fill_(0.5)
    x = seeded(2, 3, 4, 6, 5)
    out = deconv(x)
    assert out.shape == (2, 3, 1, 6, 5)  # 'same' size, any kernel
    for n in range(2):
        for t in range(3):
            want = F.conv_transpose2d(
                x[n, t : t + 1], deconv.weight, deconv.bias, padding=kernel_size // 2
            )
            torch.testing.assert_close(out[n, t : t + 1], want)
    # linear: no activation, the transposed conv of a sum is the sum of the transposed convs
    y = seeded(2, 3, 4, 6, 5, seed=1)
    torch.testing.assert_close(
        deconv(x + y) - deconv.bias.view(1, 1, -1, 1, 1),
        out + deconv(y) - 2 * deconv.bias.view(1, 1, -1, 1, 1),
    )


def test_frame_conv_transpose_takes_the_winners_pixels():
    # the pixels of a WTA keep mask: every nonzero pixel of the code and some zero ones (a kept
    # group of zeros); the output is the dense one and the input gradient is the dense one
    # there, zero elsewhere
    torch.manual_seed(0)
    deconv = FrameConvTranspose2d(4, 1, 5)
    deconv.sparse = True
    g = torch.Generator().manual_seed(3)
    x = seeded(2, 3, 4, 6, 5)
    pixels = torch.rand(2, 3, 6, 5, generator=g) < 0.3
    zeroed = pixels & (torch.rand(2, 3, 6, 5, generator=g) < 0.3)
    x = (x * (pixels & ~zeroed).unsqueeze(2)).requires_grad_()
    up = seeded(2, 3, 1, 6, 5, seed=4)
    half = pixels & (torch.rand(2, 3, 6, 5, generator=g) < 0.5)
    out = deconv(x, torch.stack([half, pixels & ~half], dim=2))  # a keep mask of two groups
    (grad,) = torch.autograd.grad(out, x, up)
    dense = x.detach().requires_grad_()
    deconv.sparse = False
    want = deconv(dense)
    (want_grad,) = torch.autograd.grad(want, dense, up)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(grad, want_grad * pixels.unsqueeze(2))
    assert grad[zeroed.unsqueeze(2).expand_as(grad)].abs().sum() > 0  # reached the zero pixels


def test_frame_convs_glorot_weights_zero_biases():
    torch.manual_seed(0)
    for layer, fan in (
        (FrameConv2d(8, 16, 3), (8 + 16) * 9),
        (FrameConvTranspose2d(16, 8, 5), (16 + 8) * 25),
    ):
        limit = math.sqrt(6 / fan)
        w = layer.weight.detach()
        assert w.abs().max() <= limit
        assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
