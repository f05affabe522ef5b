"""The sparse backward of the CNN encoder (`gksparse.ops.sparsebackward`) gives the dense
backward's gradients: every kernel and bias of the encoder and the decoder, and the input's,
for every CNN method with a sparse code, its ablations, k > 1, padded frames, all-black
frames (ties), frames and batches without a winner, and bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensors import gen, grads_of, sparse_code
from tiny_models import small_model

from gksparse.ops import sparsebackward
from gksparse.ops.sparsebackward import SparseBackwardConvs, conv_backward_at, rows

FP32 = dict(rtol=1e-5, atol=1e-5)  # relative to each gradient's largest entry
BF16 = dict(rtol=2e-2, atol=2e-2)  # the dense bf16 backward rounds its products to 8 bits
SIZE = dict(height=10, width=10)  # big enough for windows that overlap and touch the border


def videos(n: int = 3, t: int = 4, c: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, t, c, 10, 10, generator=gen(seed))


def step_grads(model, x, mask=None, sparse=True, bf16=False, input_grad=True):
    """The pretraining loss's gradients: every parameter of the model (name -> grad), plus
    the input's under 'input'."""
    model.encoder.sparse_backward = sparse
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(input_grad)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model.pretrain_loss(x, mask)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    if input_grad:
        grads["input"] = x.grad
    return grads


def assert_same_grads(sparse: dict, dense: dict, tol: dict) -> None:
    assert sparse.keys() == dense.keys()
    for name, g_d in dense.items():
        g_s = sparse[name]
        assert g_s.dtype == g_d.dtype and g_s.shape == g_d.shape, name
        scale = max(float(g_d.abs().max()), 1e-30)  # relative to the largest entry
        torch.testing.assert_close(
            g_s / scale, g_d / scale, rtol=tol["rtol"], atol=tol["atol"], msg=name
        )


def compare(method, x, mask=None, bf16=False, **config):
    model = small_model(method, **{**SIZE, **config})
    model.train()
    dense = step_grads(model, x, mask, sparse=False, bf16=bf16)
    sparse = step_grads(model, x, mask, sparse=True, bf16=bf16)
    assert_same_grads(sparse, dense, BF16 if bf16 else FP32)
    return sparse


def limit(monkeypatch, density: float) -> None:
    """Set the density up to which a layer's backward runs sparse (direct and FFT layers)."""
    for name in ("max_density", "max_density_fft", "max_density_bf16"):
        monkeypatch.setattr(SparseBackwardConvs, name, density)


@pytest.fixture
def calls(monkeypatch):
    """How many layers ran the sparse backward (`conv_backward_at` calls)."""
    seen: list[int] = []

    def counted(*a, **kw):
        seen.append(1)
        return conv_backward_at(*a, **kw)

    monkeypatch.setattr(sparsebackward, "conv_backward_at", counted)
    return seen


METHODS = ("wtacnn", "groupwtacnn", "slowgroupwtacnn")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("enc_kernel", [1, 3, 5])
def test_sparse_backward_equals_dense(method, enc_kernel, calls, monkeypatch):
    # tiny frames: one 3 x 3 spread already reaches a third of them; force the sparse path
    limit(monkeypatch, 1.0)
    compare(method, videos(), enc_kernel=enc_kernel)
    assert len(calls) == 3  # every layer ran sparse


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [(2, 1), (1, 3)])
def test_sparse_backward_with_larger_k(method, k):
    compare(method, videos(), k_spatial=k[0], k_lifetime=k[1])


@pytest.mark.parametrize("ablation", [dict(k_spatial=100), dict(k_lifetime=12)])
@pytest.mark.parametrize("method", METHODS)
def test_ablations_fall_back_to_dense_and_agree(method, ablation):
    compare(method, videos(), **ablation)  # nospatial: k = H*W; nolifetime: k = N*T


@pytest.mark.parametrize(("max_density", "sparse_layers"), [(0.0, 0), (0.1, 1), (0.5, 2), (1.0, 3)])
def test_every_switch_point_agrees(max_density, sparse_layers, monkeypatch, calls):
    # all dense, a switch to the dense backward after one or two layers, all sparse
    limit(monkeypatch, max_density)
    compare("groupwtacnn", videos(), k_spatial=2, k_lifetime=2)
    assert len(calls) == sparse_layers


def test_fft_layers_with_the_sparse_backward(monkeypatch, calls):
    limit(monkeypatch, 1.0)
    model = small_model("groupwtacnn", enc_kernel=5, **SIZE)
    for conv in model.encoder.convs:
        conv.fft = True  # the forward by FFT; the backward from the saved activations
    x = videos()
    dense = step_grads(model, x, sparse=False)
    sparse = step_grads(model, x, sparse=True)
    assert_same_grads(sparse, dense, FP32)
    assert len(calls) == 3


@pytest.mark.parametrize("method", METHODS)
def test_padded_frames_black_frames_and_frames_without_winner(method):
    x = videos(seed=3)
    x[0, 1] = 0.0  # an all-black frame: ties everywhere
    x[1, 2] = 0.0
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 2:] = False  # padded frames: zeroed, they never win
    compare(method, x, mask)


def test_a_batch_without_any_winner_gives_zero_encoder_gradients(calls):
    model = small_model("groupwtacnn", **SIZE)
    with torch.no_grad():
        model.encoder.convs[-1].bias.fill_(-100.0)  # the ReLU zeroes the whole code
    x = videos()
    dense = step_grads(model, x, sparse=False)
    sparse = step_grads(model, x, sparse=True)
    assert_same_grads(sparse, dense, FP32)
    assert not any(g.any() for n, g in sparse.items() if n.startswith("encoder"))
    assert len(calls) == 3


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast(method, monkeypatch, calls):
    limit(monkeypatch, 1.0)
    compare(method, videos(), bf16=True)
    assert len(calls) == 3


@pytest.mark.parametrize(("bf16", "sparse_layers"), [(False, 3), (True, 0)])
def test_bf16_has_its_own_break_even(bf16, sparse_layers, monkeypatch, calls):
    # oneDNN's bf16 backward is faster than its fp32 one, the sparse backward is not
    limit(monkeypatch, 1.0)
    monkeypatch.setattr(SparseBackwardConvs, "max_density_bf16", 0.0)
    compare("groupwtacnn", videos(), bf16=bf16)
    assert len(calls) == sparse_layers


def test_three_channel_frames_and_a_frozen_input():
    x = videos(c=3)
    model = small_model("groupwtacnn", in_channels=3, enc_kernel=5, **SIZE)
    dense = step_grads(model, x, sparse=False, input_grad=False)
    sparse = step_grads(model, x, sparse=True, input_grad=False)
    assert_same_grads(sparse, dense, FP32)


def test_sparse_backward_in_double_precision_is_tight(monkeypatch):
    limit(monkeypatch, 1.0)  # sparse however dense
    model = small_model("wtacnn", **SIZE).double()
    x = videos().double()
    dense = step_grads(model, x, sparse=False)
    sparse = step_grads(model, x, sparse=True)
    assert_same_grads(sparse, dense, dict(rtol=1e-12, atol=1e-12))


@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_one_convolution_from_sparse_rows(k, nhwc):
    x = torch.randn(4, 6, 7, 9, generator=gen(0))
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 6, k, k, generator=gen(1))
    up = sparse_code(4, 5, 7, 9, density=0.1, seed=2)
    conv = lambda x, w, b: F.conv2d(x, w, b, padding=k // 2)  # noqa: E731
    _, (gx_d, gw_d, gb_d) = grads_of(conv, x, w, torch.zeros(5), upstream=up)
    pos = up.ne(0).any(1).view(-1).nonzero().squeeze(1)
    gw, gb, reached, xr, gx = conv_backward_at(x, w, pos, rows(up, pos), True)
    torch.testing.assert_close(gw, gw_d, **FP32)
    torch.testing.assert_close(gb, gb_d, **FP32)
    torch.testing.assert_close(xr, rows(x, reached))
    torch.testing.assert_close(gx, rows(gx_d, reached), **FP32)
    off = torch.ones(gx_d.numel() // 6, dtype=torch.bool)
    off[reached] = False
    assert not rows(gx_d, off.nonzero().squeeze(1)).any()  # nothing reaches the others


def test_a_new_cnn_model_takes_the_sparse_backward_on_the_cpu(monkeypatch, calls):
    limit(monkeypatch, 1.0)
    model = small_model("groupwtacnn", **SIZE)
    model.zero_grad(set_to_none=True)
    model.pretrain_loss(videos()).backward()  # the model's own setting, not step_grads'
    assert len(calls) == 3
    default = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert_same_grads(default, step_grads(model, videos(), sparse=False, input_grad=False), FP32)


def test_cuda_keeps_the_dense_backward_unless_forced():
    assert sparsebackward.uses_sparse_backward("auto", torch.device("cpu"))
    assert not sparsebackward.uses_sparse_backward("auto", torch.device("cuda"))
    assert sparsebackward.uses_sparse_backward(True, torch.device("cuda"))


def test_the_thread_count_is_restored(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(SparseBackwardConvs, "threads", 1)
    compare("groupwtacnn", videos())
    assert torch.get_num_threads() == before
