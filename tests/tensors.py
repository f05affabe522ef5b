"""Helpers shared by the tests of the tensor operators."""

from __future__ import annotations

import torch


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sparse_code(*shape: int, density: float, seed: int = 0) -> torch.Tensor:
    """ReLU'd values where only a `density` fraction of the pixels carry nonzero channels."""
    b, c, h, w = shape
    on = torch.rand(b, 1, h, w, generator=gen(seed)) < density
    return torch.relu(torch.randn(shape, generator=gen(seed + 1))) * on


def grads_of(fn, *tensors: torch.Tensor, upstream: torch.Tensor):
    """(output, grads of `tensors`) of `fn(*tensors)` for the given upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(upstream)
    return out.detach(), [leaf.grad for leaf in leaves]


def seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
