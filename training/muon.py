"""Muon: momentum whose update is orthogonalised before it is applied, for the hidden weight
matrices of a network; every other parameter (embeddings, the output head, norms, biases) keeps
AdamW. `configure_adamw` builds it when a config says `optimizer: muon`.

Why it helps: the momentum of a weight matrix is dominated by a few directions (a few large
singular values). Replacing it by the nearest orthogonal matrix, U V^T from its SVD, gives every
direction the same step size, so rarely-pushed directions learn as fast as the dominant ones.
An SVD per step is too slow, so a few Newton-Schulz iterations (matrix products only, which the
GPU runs in bf16) approximate U V^T: singular values land near 1, not exactly on it, which is
what the update needs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

# The odd quintic p(s) = a s + b s^3 + c s^5 applied to the singular values: chosen to raise
# small ones fast (slope a ~ 3.4 at 0) and to keep every value inside roughly [0.7, 1.2] after
# a few iterations, rather than converge exactly to 1 (which would take many more).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise `matrix` (..., m, n): same singular vectors, singular values
    near 1. Batched over leading dimensions; runs in bf16 on the GPU, in float32 elsewhere."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(torch.bfloat16 if matrix.is_cuda else torch.float32)
    wide = x.size(-2) <= x.size(-1)
    if not wide:  # work on the short side: X X^T is then the smaller product
        x = x.mT
    # scale so every singular value is <= 1 (the Frobenius norm bounds the largest one)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.mT


def hidden_matrices(module: nn.Module) -> list[Tensor]:
    """The weights Muon trains: those of nn.Linear layers, except an output head (a submodule
    named `lm_head` or `head`) and any matrix shared with an nn.Embedding (a tied head). Those
    are lookups or read-outs, not maps between hidden states, and stay with AdamW."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    chosen, seen = [], set()
    for name, sub in module.named_modules():
        if not isinstance(sub, nn.Linear) or name.rsplit(".", 1)[-1] in ("lm_head", "head"):
            continue
        weight = sub.weight
        if weight.requires_grad and id(weight) not in embeddings and id(weight) not in seen:
            seen.add(id(weight))
            chosen.append(weight)
    return chosen


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer for the Trainer and the LR schedule: Muon on `matrices`, AdamW on `adamw_groups`
    (dicts with params, weight_decay). Every group's `lr` is what the schedule scales, so the
    cosine moves Muon's lr and AdamW's together. Muon's step for a (rows x cols) matrix is
    lr * max(1, rows / cols)^0.5 times the orthogonalised momentum, so that tall and wide
    matrices change their outputs by similar amounts."""

    def __init__(
        self,
        matrices: Iterable[Tensor],
        adamw_groups: list[dict],
        lr: float = 0.02,
        momentum: float = 0.95,
        adamw_lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        ns_steps: int = 5,
        fused: bool = False,
    ) -> None:
        muon_group = {"params": list(matrices), "lr": lr, "muon": True}
        adamw_groups = [{**g, "lr": g.get("lr", adamw_lr), "muon": False} for g in adamw_groups]
        defaults = {"lr": lr, "momentum": momentum, "ns_steps": ns_steps, "weight_decay": 0.0}
        super().__init__([muon_group, *adamw_groups], defaults)
        inner = [{"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]} for g in adamw_groups]
        self.adamw = torch.optim.AdamW(inner, lr=adamw_lr, betas=betas, fused=fused)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        adamw_groups = iter(self.adamw.param_groups)
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:  # the schedule set this group's lr: AdamW follows
                inner = next(adamw_groups)
                inner["lr"], inner["weight_decay"] = group["lr"], group["weight_decay"]
        self.adamw.step()
        return loss

    def _muon_step(self, group: dict) -> None:
        by_shape: dict[torch.Size, list[Tensor]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is not None:
                by_shape[p.shape].append(p)
        mu = group["momentum"]
        for shape, params in by_shape.items():
            grads = [p.grad for p in params]
            buffers = []
            for p in params:
                if "momentum" not in self.state[p]:
                    self.state[p]["momentum"] = torch.zeros_like(p)
                buffers.append(self.state[p]["momentum"])
            torch._foreach_mul_(buffers, mu)
            torch._foreach_add_(buffers, grads)
            nesterov = torch._foreach_add(grads, buffers, alpha=mu)  # look ahead along the momentum
            update = newton_schulz(torch.stack(nesterov), group["ns_steps"]).to(params[0].dtype)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            scale = max(1.0, shape[0] / shape[1]) ** 0.5
            torch._foreach_add_(params, list(update.unbind(0)), alpha=-group["lr"] * scale)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["adamw"] = self.adamw.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        self.adamw.load_state_dict(state_dict.pop("adamw"))
        super().load_state_dict(state_dict)
