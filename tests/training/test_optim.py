"""The reference's training rules (optim.py): Keras 2.2.4's Adam and its global clipnorm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gksparse.training.optim import KerasAdam, clip_grad_norm_


def keras_adam_reference(p, grads, lr, b1=0.9, b2=0.999, eps=1e-7):
    """Keras 2.2.4's `Adam.get_updates`, transcribed line by line in float64 numpy."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    out = []
    for i, g in enumerate(grads):
        t = i + 1
        lr_t = lr * (np.sqrt(1.0 - np.power(b2, t)) / (1.0 - np.power(b1, t)))
        m = (b1 * m) + (1.0 - b1) * g
        v = (b2 * v) + (1.0 - b2) * np.square(g)
        p = p - lr_t * m / (np.sqrt(v) + eps)
        out.append(p.copy())
    return out


def gradient_steps(scale: float, steps: int = 6, shape=(5, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(shape) * scale for _ in range(steps)]
    grads[2][0] = 0.0  # a sparse code: some gradients are exactly zero
    return grads


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 1e-3, 1.0, 1e3])
def test_keras_adam_follows_the_keras_formula_step_for_step(scale):
    p0 = np.random.default_rng(1).standard_normal((5, 3))
    grads = gradient_steps(scale)
    want = keras_adam_reference(p0, grads, lr=1e-4)
    param = nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = KerasAdam([param], lr=1e-4)
    for g, w in zip(grads, want, strict=True):
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        np.testing.assert_allclose(param.detach().numpy(), w, rtol=1e-12, atol=1e-15)


def test_keras_adam_differs_from_torch_adam_for_tiny_gradients():
    # For gradients near eps, Keras' eps beside the uncorrected sqrt(v) makes its first step
    # several times smaller than torch's (eps after bias correction): METHOD.md 5.1.
    g = torch.full((4,), 1e-7)
    steps = {}
    for name, cls in (("keras", KerasAdam), ("torch", torch.optim.Adam)):
        p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
        opt = cls([p], lr=1e-4, eps=1e-7) if name == "keras" else cls([p], lr=1e-4)
        p.grad = g.double()
        opt.step()
        steps[name] = -p.detach()[0].item()
    assert steps["torch"] / steps["keras"] > 3
    # first step of Keras: lr * sqrt(1-b2) / (1-b1) * 0.1 g / (sqrt(0.001) |g| + eps)
    m, v = 0.1 * 1e-7, 0.001 * 1e-14
    keras = 1e-4 * math.sqrt(0.001) / 0.1 * m / (math.sqrt(v) + 1e-7)
    assert steps["keras"] == pytest.approx(keras, rel=1e-9)


def test_keras_adam_in_float32_and_several_tensors_and_groups():
    rng = np.random.default_rng(2)
    shapes = [(4, 3), (7,), (2, 2, 2)]
    p0 = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) * 1e-4 for s in shapes] for _ in range(4)]
    params = [nn.Parameter(torch.tensor(p, dtype=torch.float32)) for p in p0]
    opt = KerasAdam([{"params": params[:2]}, {"params": params[2:], "lr": 1e-3}], lr=1e-4)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    for i, p in enumerate(params):
        want = keras_adam_reference(p0[i], [s[i] for s in grads], lr=1e-3 if i == 2 else 1e-4)
        np.testing.assert_allclose(p.detach().numpy(), want[-1], rtol=1e-5, atol=1e-6)


def test_keras_adam_state_round_trips_and_continues():
    grads = gradient_steps(1e-3, steps=4)
    p0 = np.zeros((5, 3))
    want = keras_adam_reference(p0, grads, lr=1e-2)[-1]
    param = nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
    opt = KerasAdam([param], lr=1e-2)
    for g in grads[:2]:
        param.grad = torch.tensor(g)
        opt.step()
    state = opt.state_dict()
    opt = KerasAdam([param], lr=1e-2)  # a new optimizer continues from the saved state
    opt.load_state_dict(state)
    for g in grads[2:]:
        param.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(param.detach().numpy(), want, rtol=1e-12)
    assert float(opt.state[param]["step"]) == 4


def test_keras_adam_skips_parameters_without_gradients():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = KerasAdam([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in opt.state
    assert (a.detach() < 1).all()


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(eps=-1.0), dict(betas=(1.0, 0.999))])
def test_keras_adam_refuses_bad_settings(bad):
    with pytest.raises(ValueError, match="KerasAdam needs"):
        KerasAdam([nn.Parameter(torch.ones(1))], **bad)


# -- clipnorm -------------------------------------------------------------------------------
def test_clipnorm_hand_case():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global norm 5
    total = clip_grad_norm_([a, b], 1.0)
    assert total.item() == pytest.approx(5.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]))  # both scaled by 1/5
    torch.testing.assert_close(b.grad, torch.tensor([0.8]))
    a.grad, b.grad = torch.tensor([0.3, 0.0]), torch.tensor([0.4])  # norm 0.5 < 1: untouched
    clip_grad_norm_([a, b], 1.0)
    torch.testing.assert_close(b.grad, torch.tensor([0.4]))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_clipnorm_agrees_with_torch_clip_grad_norm(scale):
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    ours = [nn.Parameter(torch.zeros(s)) for s in shapes]
    theirs = [nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.randn(p.shape, generator=g) * scale
        q.grad = p.grad.clone()
    extra = nn.Parameter(torch.zeros(3))  # no gradient: ignored by both
    total = clip_grad_norm_([*ours, extra], 1.0)
    want = torch.nn.utils.clip_grad_norm_([*theirs, extra], 1.0)
    torch.testing.assert_close(total, want)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)  # torch's 1e-6 aside
    assert extra.grad is None
