"""Reading attention weights: rollout through layers, and per-head statistics."""

from __future__ import annotations

import torch
from torch import Tensor


def attention_rollout(layers: list[Tensor], residual: float = 0.5) -> Tensor:
    """Abnar & Zuidema (2020): how much each output token draws on each input token through all
    layers. Each layer's head-averaged weights (B, H, T, T) are mixed with the identity (the
    residual path) and multiplied in order. Returns (B, T, T); rows sum to 1."""
    rollout = None
    for weights in layers:
        a = weights.mean(dim=1)  # average the heads
        a = residual * torch.eye(a.size(-1), device=a.device, dtype=a.dtype) + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def attention_entropy(weights: Tensor) -> Tensor:
    """Entropy in bits of each query's distribution, averaged over queries: (..., T_q, T_k) -> (...)."""
    p = weights.clamp_min(1e-12)
    return -(weights * p.log2()).sum(-1).mean(-1)
