"""Whole models with every speed lever give the plain path's loss and gradients: sparse
decoder, FFT convolutions, fused recurrence, sparse backward, layouts, bf16.

Each operator's fast path is tested on its own beside the operator (test_fftconv,
test_sparseconv, test_recurrence, test_sparsity).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tensors import gen

from gksparse.model.layers import FrameConv2d
from gksparse.model.methods import METHODS
from gksparse.model.recurrence import ConvMinimalRNN2d
from gksparse.model.video import ModelConfig, build_model
from gksparse.training.engine import autocast


# -- whole models: sparse decoder, layouts, autocast -----------------------------------------
def tiny(method: str, **kw) -> tuple:
    cfg = ModelConfig(method, 2, 8, 8, 5, filters=8, enc_kernel=3, dec_kernel=5, groups=4, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # nonzero biases: black backgrounds tie exactly
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    x = torch.rand(3, 4, 2, 8, 8, generator=gen(1))
    x[0, :, :, :4] = 0.0  # part black background
    return model, x


def loss_and_grads(model, x, use_autocast: bool = False):
    model.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), use_autocast):
        loss = model.pretrain_loss(x)
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


MODEL_CASES = [
    ("groupwtacnn", {}),
    ("groupwtacrnn", {}),
    ("wtacnn", {}),
    ("wtacrnn", {}),
    ("slowgroupwtacnn", {}),
    ("groupwtacnn", {"k_spatial": 64}),  # nospatial
    ("groupwtacrnn", {"k_lifetime": 12}),  # nolifetime
    ("denoisingcnn", {}),
]


@pytest.mark.parametrize(("method", "kw"), MODEL_CASES)
def test_sparse_decoder_gives_the_dense_loss_and_gradients(method, kw):
    model, x = tiny(method, **kw)
    dense = copy.deepcopy(model)
    dense.decoder.sparse = False
    torch.manual_seed(5)  # same input dropout for the denoising method
    loss_s, grads_s = loss_and_grads(model, x)
    torch.manual_seed(5)
    loss_d, grads_d = loss_and_grads(dense, x)
    torch.testing.assert_close(loss_s, loss_d)
    assert grads_s.keys() == grads_d.keys()
    for name in grads_d:
        torch.testing.assert_close(grads_s[name], grads_d[name], msg=name)


def all_levers_off(model):
    """The reference: dense decoder, direct convolutions, autograd recurrence, dense backward."""
    model = copy.deepcopy(model)
    model.decoder.sparse = False
    for m in model.modules():
        if isinstance(m, FrameConv2d):
            m.fft, m.sparse_grad = False, False
        if isinstance(m, ConvMinimalRNN2d):
            m.fft, m.fused = False, False
    return model


@pytest.mark.parametrize(("method", "kw"), MODEL_CASES)
@pytest.mark.parametrize("fft", ["auto", True])
def test_all_levers_give_the_plain_loss_and_gradients(method, kw, fft):
    model, x = tiny(method, **kw)
    for m in model.modules():
        if isinstance(m, FrameConv2d | ConvMinimalRNN2d):
            m.fft = fft  # True: FFT even for the tiny 3 x 3 layers
    plain = all_levers_off(model)
    torch.manual_seed(5)
    loss_f, grads_f = loss_and_grads(model, x)
    torch.manual_seed(5)
    loss_p, grads_p = loss_and_grads(plain, x)
    torch.testing.assert_close(loss_f, loss_p)
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn"])
def test_channels_last_gives_the_same_loss_and_gradients(method):
    model, x = tiny(method)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert nhwc.encoder.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    loss_a, grads_a = loss_and_grads(model, x)
    loss_b, grads_b = loss_and_grads(nhwc, x)
    torch.testing.assert_close(loss_b, loss_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)
    model.eval(), nhwc.eval()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), model(x))


@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn"])
def test_bf16_autocast_loss_is_fp32_and_close(method):
    model, x = tiny(method)
    loss32, _ = loss_and_grads(model, x)
    loss16, grads16 = loss_and_grads(copy.deepcopy(model), x, use_autocast=True)
    assert loss16.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads16.values())
    torch.testing.assert_close(loss16, loss32, rtol=3e-2, atol=1e-3)


# -- gradient layouts -------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("fft", ["auto", True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "vgg19"])
def test_every_gradient_has_its_parameters_strides(method, channels_last, fft, in_channels):
    # DDP's gradient buckets have the parameters' exact strides and it warns about any
    # gradient with other strides; AccumulateGrad keeps a gradient whose strides differ only
    # in size-1 dims (a (F, 1, k, k) kernel of grey frames) and copies one of another memory
    # order. Every backward must return the parameter's strides (checked before and after
    # AccumulateGrad).
    cfg = ModelConfig(method, in_channels, 8, 8, 5, filters=8, dec_kernel=5, groups=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, FrameConv2d | ConvMinimalRNN2d):
            m.fft = fft  # True: the FFT paths, also for the tiny 3 x 3 layers
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.rand(3, 4, in_channels, 8, 8, generator=gen(1))
    x[0, :, :, :4] = 0.0  # part black background

    def loss() -> torch.Tensor:
        if model.decoder is not None:
            return model.pretrain_loss(x)
        return F.cross_entropy(model(x), torch.tensor([0, 1, 4]))  # no pretraining

    named = list(model.named_parameters())
    raw = torch.autograd.grad(loss(), [p for _, p in named], allow_unused=True)
    loss().backward()
    checked = 0
    for (name, p), g in zip(named, raw, strict=True):
        if g is None:
            continue
        assert g.stride() == p.stride(), f"{name} {tuple(p.shape)}: {g.stride()} != {p.stride()}"
        assert p.grad.stride() == p.stride(), f"{name}: {p.grad.stride()} != {p.stride()}"
        checked += p.ndim == 4
    assert checked >= 3  # the encoder's kernels at least
