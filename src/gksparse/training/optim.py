"""The training rules of the reference (Keras 2.2.4, METHOD.md 5.1): its Adam and its clipnorm.

Keras' Adam puts its epsilon beside the square root of the *uncorrected* second moment and
folds both bias corrections into the step size; PyTorch's Adam adds epsilon after the
correction. For the tiny gradients of a sparse code the two differ by up to a few times in
the first steps, so the protocol trains with `KerasAdam`. Keras' `clipnorm` is one norm over
all gradients of a step (`clip_grad_norm_`), not each tensor's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class KerasAdam(torch.optim.Optimizer):
    """Adam exactly as Keras 2.2.4 updates: for step t = 1, 2, ...

        m_t = b1 * m + (1 - b1) * g
        v_t = b2 * v + (1 - b2) * g^2
        lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)
        p  -= lr_t * m_t / (sqrt(v_t) + eps)

    with Keras' defaults b1 = 0.9, b2 = 0.999, eps = 1e-7 (no amsgrad, no decay). The
    moments are updated for all parameters of a group at once (`torch._foreach_*`), as
    `torch.optim.Adam(foreach=True)` does. Its state dict has the same layout as
    torch.optim.Adam's (`step`, `exp_avg`, `exp_avg_sq` per parameter).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
    ) -> None:
        if lr <= 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"KerasAdam needs lr > 0, eps >= 0 and 0 <= betas < 1; got lr={lr}, eps={eps}, "
                f"betas={betas}."
            )
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            for p in params:
                if not self.state[p]:
                    self.state[p] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            m = [s["exp_avg"] for s in states]
            v = [s["exp_avg_sq"] for s in states]
            # one step count per group: the parameters of a group always step together
            t = float(states[0]["step"]) + 1.0
            for s in states:
                s["step"].fill_(t)
            torch._foreach_lerp_(m, grads, 1 - b1)  # b1 * m + (1 - b1) * g
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            lr_t = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, m, denom, value=-lr_t)
        return loss


def clip_grad_norm_(params: Iterable[nn.Parameter], clipnorm: float) -> torch.Tensor:
    """Keras' `clipnorm`: one L2 norm `g` over all gradients; if `g >= clipnorm`, every
    gradient is multiplied by `clipnorm / g`. Returns `g` (a 0-dim tensor).

    The same as `torch.nn.utils.clip_grad_norm_` but for its `1e-6` beside the norm, which
    Keras does not add. No host synchronisation: the scale is applied on the device.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
    scale = torch.where(total >= clipnorm, clipnorm / total, torch.ones_like(total))
    torch._foreach_mul_(grads, scale.to(grads[0].dtype))
    return total
