"""The boxes of the Transformer diagram (notes: "Transformer Architecture").

Each sub-layer is wrapped in a residual connection and LayerNorm, in either order:
- post-norm (the paper): x = LayerNorm(x + Sublayer(x))
- pre-norm (GPT-2 and most modern models): x = x + Sublayer(LayerNorm(x)); trains stably
  without long warmup, which is why our models default to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from models.attention import DecoderCache, MultiHeadAttention
from models.positional import RotaryEmbedding


class ReLUSquared(nn.Module):
    """relu(x)^2 (So et al. 2021, "Primer"): as cheap as ReLU, and small GPTs train faster with it."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x).square()


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "relu2": ReLUSquared}
# how views write them, and what each does to a hidden unit, in a few words
ACTIVATION_NAMES = {"gelu": "GELU", "relu": "ReLU", "relu2": "ReLU²"}
ACTIVATION_EFFECTS = {
    "gelu": "keeps the positive part, softly (a little of the negative part leaks through)",
    "relu": "keeps the positive part and zeroes the rest",
    "relu2": "keeps the positive part and squares it, and zeroes the rest",
}


class FeedForward(nn.Module):
    """Position-wise FFN(x) = act(x W_1 + b_1) W_2 + b_2, the same network at every position."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: choose one of {sorted(ACTIVATIONS)}")
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.activation = activation  # its name in ACTIVATIONS, for views that draw its curve
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class Residual(nn.Module):
    """Add & Norm around one sub-layer, pre- or post-norm, with dropout on the sub-layer output."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], tuple[Tensor, object]]):
        if self.norm_first:
            out, extra = sublayer(self.norm(x))
            return x + self.dropout(out), extra
        out, extra = sublayer(x)
        return self.norm(x + self.dropout(out)), extra


class EncoderLayer(nn.Module):
    """Self-attention (every position sees every other) then feed-forward."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = True,
        activation: str = "gelu",
        rope: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rope=rope)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.attn_residual = Residual(d_model, dropout, norm_first)
        self.ff_residual = Residual(d_model, dropout, norm_first)

    def forward(self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False):
        """Returns (x, {"self": weights or None})."""
        x, weights = self.attn_residual(x, lambda h: self.self_attn(h, mask=mask, need_weights=need_weights))
        x, _ = self.ff_residual(x, lambda h: (self.ff(h), None))
        return x, {"self": weights}


class DecoderLayer(nn.Module):
    """Masked self-attention, then cross-attention to the encoder (if any), then feed-forward.

    Without cross-attention this is the GPT block (decoder-only).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = True,
        activation: str = "gelu",
        cross_attention: bool = True,
        rope: RotaryEmbedding | None = None,
        bias: bool = True,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, bias=bias, rope=rope, qk_norm=qk_norm)
        self.self_residual = Residual(d_model, dropout, norm_first)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout, bias=bias) if cross_attention else None
        self.cross_residual = Residual(d_model, dropout, norm_first) if cross_attention else None
        self.ff = FeedForward(d_model, d_ff, dropout, activation, bias=bias)
        self.ff_residual = Residual(d_model, dropout, norm_first)
        self.causal = True  # False lets each position see the future (an experiment: it cheats)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        position: int = 0,
        window: int | None = None,
    ):
        """Returns (x, {"self": ..., "cross": ...}); `cache` holds every layer, `layer` picks ours.

        position: absolute position of x's first token without a cache (a cache knows its own);
        window: self-attention sees at most that many latest positions (sliding window).
        """
        self_cache = cache.self_attn[layer] if cache is not None else None
        position = cache.position if cache is not None else position
        x, self_w = self.self_residual(
            x,
            lambda h: self.self_attn(
                h,
                causal=self.causal,
                cache=self_cache,
                position=position,
                need_weights=need_weights,
                window=window,
            ),
        )
        cross_w = None
        if self.cross_attn is not None:
            cross_cache = cache.cross_attn[layer] if cache is not None else None
            x, cross_w = self.cross_residual(
                x,
                lambda h: self.cross_attn(
                    h, context=memory, mask=memory_mask, cache=cross_cache, need_weights=need_weights
                ),
            )
        x, _ = self.ff_residual(x, lambda h: (self.ff(h), None))
        return x, {"self": self_w, "cross": cross_w}
