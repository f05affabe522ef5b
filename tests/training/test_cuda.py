"""CUDA against the CPU (`pytest -m cuda`): the sparsity operators, the models' forward and
backward passes, a training epoch and the probes give the CPU's results on a GPU, exactly
where the arithmetic allows (masks, ties, votes) and within float32 rounding elsewhere.

Skipped without CUDA (tests/conftest.py). `GKSPARSE_TEST_DEVICE=cpu` runs them with the CPU
as the device under test, against itself: how CI checks them and `bench/gpu_check.sh`
without a GPU. The GPU runs in full float32 here (TF32 off): the comparisons are with the
CPU's float32, not with TF32's 10-bit mantissas.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from tiny_models import small_model

from gksparse.data.containers import Videos
from gksparse.evaluation.classifiers import knn_probe, linear_probe
from gksparse.evaluation.vectors import encode_vectors
from gksparse.model.video import ModelConfig, VideoModel, build_model
from gksparse.ops.sparsity import group_ksparse, ksparse, sparse_chain, topk_mask
from gksparse.training.engine import ClassificationLoss, Stage, autocast, fit, pretrain_loss

pytestmark = pytest.mark.cuda
DEVICE = torch.device(os.environ.get("GKSPARSE_TEST_DEVICE") or "cuda")
CPU = torch.device("cpu")
METHODS = ("groupwtacnn", "groupwtacrnn")


@pytest.fixture(autouse=True)
def full_float32():
    """No TF32 in cuDNN's convolutions and in matrix products while a test runs."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def on_device(x: torch.Tensor) -> torch.Tensor:
    return x.to(DEVICE)


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the largest entry of `b` (the CPU's)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def tied(*shape: int, seed: int = 0) -> torch.Tensor:
    """Small whole numbers: ties everywhere, and every sum of squares exact in float32."""
    return torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(seed)).float()


# -- the sparsity operators: the same winners, ties included ------------------------------
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dims", [(3, 4), (0, 1), (0, 3)])
def test_topk_masks_and_ksparse_equal_the_cpu(k, fast, dims):
    x = tied(6, 5, 8, 6, 6)
    mask = topk_mask(on_device(x), k, dims, fast=fast)
    assert mask.device.type == DEVICE.type
    assert torch.equal(mask.cpu(), topk_mask(x, k, dims, fast=fast))
    assert torch.equal(ksparse(on_device(x), k, dims, fast=fast).cpu(), ksparse(x, k, dims))


@pytest.mark.parametrize("k", [1, 2])
def test_group_ksparse_and_chains_equal_the_cpu(k):
    x = tied(30, 12, 8, 4, 4, seed=1)  # lifetime over 360 entries: a 16-bit running count
    for dims in ((3, 4), (0, 1)):
        got = group_ksparse(on_device(x), 4, k, dims, channel_dim=2)
        assert torch.equal(got.cpu(), group_ksparse(x, 4, k, dims, channel_dim=2))
    steps = ((k, (3, 4)), (k, (0, 1)))
    for kind, groups in (("plain", 1), ("group", 4)):
        got = sparse_chain(on_device(x), kind, steps, groups, channel_dim=2)
        assert torch.equal(got.cpu(), sparse_chain(x, kind, steps, groups, channel_dim=2))


# -- the models ---------------------------------------------------------------------------
def paper_model(method: str) -> VideoModel:
    """Rotated MNIST's model (64 filters in 16 groups, 3 x 3 encoder, 11 x 11 decoder)."""
    torch.manual_seed(0)
    return build_model(ModelConfig(method, 1, 14, 14, 10, head_dropout=0.0))


def grads(model: VideoModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", METHODS)
def test_pretraining_forward_and_backward_match_the_cpu(method):
    cpu = paper_model(method)
    dev = copy.deepcopy(cpu).to(DEVICE)
    x = torch.rand(2, 6, 1, 14, 14, generator=torch.Generator().manual_seed(2))
    out_cpu, code_cpu = cpu.reconstruct(x)
    out_dev, code_dev = dev.reconstruct(on_device(x))
    assert torch.equal(code_dev.cpu() != 0, code_cpu != 0)  # the same winners
    assert largest_difference(out_dev, out_cpu) < 1e-4
    loss_cpu, loss_dev = cpu.pretrain_loss(x), dev.pretrain_loss(on_device(x))
    assert abs(float(loss_dev.detach()) / float(loss_cpu.detach()) - 1) < 1e-4
    loss_cpu.backward()
    loss_dev.backward()
    want, got = grads(cpu), grads(dev)
    assert got.keys() == want.keys() and want
    for name in want:
        assert largest_difference(got[name], want[name]) < 1e-3, name


@pytest.mark.parametrize("method", METHODS)
def test_classification_and_bf16_autocast_match_the_cpu(method):
    cpu = paper_model(method).eval()
    dev = copy.deepcopy(cpu).to(DEVICE)
    x = torch.rand(3, 5, 1, 14, 14, generator=torch.Generator().manual_seed(3))
    logits = cpu(x)
    assert largest_difference(dev(on_device(x)), logits) < 1e-4
    with torch.no_grad(), autocast(DEVICE, True):  # bf16: within its rounding of fp32
        loss = float(dev.pretrain_loss(on_device(x)))
        want = float(cpu.pretrain_loss(x))
    assert abs(loss / want - 1) < 0.05


# -- training ------------------------------------------------------------------------------
def toy_videos(n: int = 12, seed: int = 4) -> Videos:
    rng = np.random.default_rng(seed)
    return Videos(rng.random((n, 4, 1, 6, 6), dtype=np.float32), np.arange(n) % 3)


def fit_one_epoch(model: VideoModel, device: torch.device, stage_name: str) -> list[dict]:
    loss = pretrain_loss if stage_name == "pretrain" else ClassificationLoss()
    stage = Stage(stage_name, model.trainable(stage_name), loss, 1, 4, lr=1e-3, clipnorm=1.0)
    generator = torch.Generator().manual_seed(5)  # the same shuffling on both devices
    train, val = toy_videos(), toy_videos(6, seed=6)
    return fit(model, stage, train, val, device=device, generator=generator, progress=False)


@pytest.mark.parametrize("method", METHODS)
def test_one_fit_epoch_matches_the_cpu(method):
    cpu = small_model(method, head_dropout=0.0)
    dev = copy.deepcopy(cpu).to(DEVICE)
    for stage in ("pretrain", "finetune"):
        want, got = fit_one_epoch(cpu, CPU, stage), fit_one_epoch(dev, DEVICE, stage)
        for key in ("loss", "val_loss"):
            assert got[0][key] == pytest.approx(want[0][key], rel=1e-4), (stage, key)
        assert got[0].get("val_accuracy") == want[0].get("val_accuracy")
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert p.device.type == DEVICE.type
        assert float((p.detach().cpu() - q.detach()).abs().max()) < 1e-4, name


# -- the probes -----------------------------------------------------------------------------
def test_probes_of_device_features_match_the_cpu():
    model = small_model("groupwtacnn")
    train, test = toy_videos(30, seed=7), toy_videos(12, seed=8)
    dev_model = copy.deepcopy(model).to(DEVICE)
    vectors = [encode_vectors(model, v, 8, CPU) for v in (train, test)]
    on_dev = [encode_vectors(dev_model, v, 8, DEVICE) for v in (train, test)]
    for got, want in zip(on_dev, vectors, strict=True):
        assert largest_difference(torch.from_numpy(got), torch.from_numpy(want)) < 1e-5
    # class-shaped features, the labels as device tensors: the probes take CUDA tensors
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(3, 16)).astype(np.float32)
    y = [np.arange(n) % 3 for n in (60, 30, 30)]
    x = [
        centres[labels] + 0.5 * rng.normal(size=(len(labels), 16)).astype(np.float32)
        for labels in y
    ]
    tx, ty = ([on_device(torch.from_numpy(a)) for a in arrays] for arrays in (x, y))
    knn = knn_probe(tx[0], ty[0], tx[2], ty[2], num_classes=3, device=DEVICE)
    assert knn == knn_probe(x[0], y[0], x[2], y[2], num_classes=3)
    linear = linear_probe(tx[0], ty[0], tx[1], ty[1], tx[2], ty[2], num_classes=3, seed=0)
    assert linear == linear_probe(x[0], y[0], x[1], y[1], x[2], y[2], num_classes=3, seed=0)
    assert knn["accuracy"] > 0.8 and linear["accuracy"] > 0.8
