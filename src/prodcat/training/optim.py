"""Adam(W) that also takes sparse gradients, and gradient clipping that handles them.

Embedding tables are most of a title model's weights, and a batch touches a few thousand
of their rows. With sparse embedding gradients, this optimizer updates only those rows
("lazy" Adam, as TensorFlow's LazyAdam and PyTorch's SparseAdam do) and the dense layers
as plain Adam(W) does: one optimizer, so schedules and checkpoints see one state.
PyTorch's own Adam refuses sparse gradients and SparseAdam refuses dense ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class LazyAdam(torch.optim.Optimizer):
    """Adam with L2 (`decoupled=False`) or decoupled (AdamW) weight decay."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            decay, decoupled = group["weight_decay"], group["decoupled"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                bias1 = 1 - beta1 ** state["step"]
                bias2 = math.sqrt(1 - beta2 ** state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if p.grad.is_sparse:
                    grad = p.grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    if decay:
                        if decoupled:
                            p.index_copy_(0, rows, p[rows] * (1 - lr * decay))
                        else:
                            values = values + decay * p[rows]
                    m_rows = m[rows].mul_(beta1).add_(values, alpha=1 - beta1)
                    v_rows = v[rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
                    m.index_copy_(0, rows, m_rows)
                    v.index_copy_(0, rows, v_rows)
                    update = m_rows / (v_rows.sqrt_().div_(bias2).add_(eps))
                    p.index_add_(0, rows, update, alpha=-lr / bias1)
                    continue
                grad = p.grad
                if decay:
                    if decoupled:
                        p.mul_(1 - lr * decay)
                    else:
                        grad = grad.add(p, alpha=decay)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                p.addcdiv_(m, v.sqrt().div_(bias2).add_(eps), value=-lr / bias1)
        return loss


@torch.no_grad()
def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale all gradients so their joint L2 norm is at most `max_norm`; return the norm."""
    grads = []
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)
    return total
