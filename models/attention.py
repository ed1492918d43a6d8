"""Attention, as "Attention Is All You Need" writes it, plus the masks and cheaper variants.

Conventions used everywhere in this package:
- q, k, v are (batch, heads, time, head_dim).
- A mask is boolean and says where attention is *allowed* (True = may attend). It broadcasts
  to (batch, heads, T_query, T_key). Disallowed scores become -inf before the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.positional import RotaryEmbedding

# ----------------------------------------------------------------------------------------------
# Masks (notes: "Masked Attention", "Sparse Attention")
# ----------------------------------------------------------------------------------------------


def causal_mask(t_query: int, t_key: int | None = None, device: torch.device | None = None) -> Tensor:
    """Lower-triangular mask: query i sees keys at positions <= its own.

    With a KV cache the queries are the *last* t_query positions of t_key, so query i sits at
    absolute position t_key - t_query + i.
    """
    t_key = t_query if t_key is None else t_key
    q_pos = torch.arange(t_key - t_query, t_key, device=device)[:, None]
    k_pos = torch.arange(t_key, device=device)[None, :]
    return k_pos <= q_pos


def padding_mask(key_is_token: Tensor) -> Tensor:
    """(batch, T_key) True where a real token is -> (batch, 1, 1, T_key): pads get no attention."""
    return key_is_token[:, None, None, :].bool()


def sliding_window_mask(
    t_query: int, window: int, t_key: int | None = None, causal: bool = True, device=None
) -> Tensor:
    """Local attention: query i sees only keys within `window` positions.

    Causal: keys i-window+1 .. i. Bidirectional: keys with |i - j| < window.
    """
    t_key = t_query if t_key is None else t_key
    q_pos = torch.arange(t_key - t_query, t_key, device=device)[:, None]
    k_pos = torch.arange(t_key, device=device)[None, :]
    dist = q_pos - k_pos
    if causal:
        return (dist >= 0) & (dist < window)
    return dist.abs() < window


# ----------------------------------------------------------------------------------------------
# Scaled dot-product attention (notes: "Attention Formula")
# ----------------------------------------------------------------------------------------------


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V, written out so the weights can be returned.

    Returns (output, weights) with weights (batch, heads, T_query, T_key); every row of weights is
    a probability distribution over keys (rows with no allowed key are all zero).
    """
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # how well each query matches each key
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:  # a fully masked row gives NaN in softmax: make it attend to nothing
        weights = weights.nan_to_num(0.0)
    if dropout_p > 0.0:
        weights_for_values = F.dropout(weights, dropout_p)
    else:
        weights_for_values = weights
    return weights_for_values @ v, weights


def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """Causal sliding-window attention in O(T * window) time and memory.

    Queries are cut into blocks of `window`; block b only looks at keys of blocks b-1 and b, then
    the exact window is applied inside. Equals full attention with `sliding_window_mask`.
    """
    b, h, t, d = q.shape
    w = window
    n_blocks = math.ceil(t / w)
    pad = n_blocks * w - t
    q_blocks = F.pad(q, (0, 0, 0, pad)).view(b, h, n_blocks, w, d)
    # keys/values get one extra block of padding in front, so block b sees [b-1, b]
    k_pad = F.pad(k, (0, 0, w, pad)).view(b, h, n_blocks + 1, w, d)
    v_pad = F.pad(v, (0, 0, w, pad)).view(b, h, n_blocks + 1, w, d)
    k_ctx = torch.cat([k_pad[:, :, :-1], k_pad[:, :, 1:]], dim=3)  # (b, h, nb, 2w, d)
    v_ctx = torch.cat([v_pad[:, :, :-1], v_pad[:, :, 1:]], dim=3)
    q_pos = torch.arange(w, device=q.device)[:, None] + w  # position inside the 2w context
    k_pos = torch.arange(2 * w, device=q.device)[None, :]
    dist = q_pos - k_pos
    allowed = (dist >= 0) & (dist < w)
    # the padding block in front of block 0 holds no real keys
    first = torch.ones(n_blocks, 1, 2 * w, dtype=torch.bool, device=q.device)
    first[0, :, :w] = False
    mask = allowed[None] & first  # (nb, w, 2w)
    out, _ = scaled_dot_product_attention(q_blocks, k_ctx, v_ctx, mask[None, None])
    return out.reshape(b, h, n_blocks * w, d)[:, :, :t]


def linear_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, eps: float = 1e-6) -> Tensor:
    """Kernelized attention (Katharopoulos et al. 2020): phi(Q) (phi(K)^T V), O(T) not O(T^2).

    phi(x) = elu(x) + 1 keeps features positive so the normaliser is a valid weighted average.
    This is an approximation: it does not equal softmax attention.
    """
    q, k = F.elu(q) + 1, F.elu(k) + 1
    if not causal:
        kv = k.transpose(-2, -1) @ v  # (b, h, d, d_v): summary of all keys, independent of T
        norm = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # (b, h, T, 1)
        return (q @ kv) / (norm + eps)
    kv = torch.einsum("bhtd,bhte->bhtde", k, v).cumsum(dim=2)  # running sums for prefixes
    norm = torch.einsum("bhtd,bhtd->bht", q, k.cumsum(dim=2))[..., None]
    return torch.einsum("bhtd,bhtde->bhte", q, kv) / (norm + eps)


# ----------------------------------------------------------------------------------------------
# KV cache (notes: "Inference ... KV caching")
# ----------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of one attention layer for the positions decoded so far.

    They live in a preallocated buffer (batch, heads, capacity, head_dim): a step writes its new
    entries in place instead of copying the whole cache into a longer tensor. `max_len` makes it a
    rolling window (relative positions only, i.e. RoPE): after each step the newest max_len - 1
    entries stay, so the next token attends to max_len keys, itself included: sliding-window
    attention. That buffer holds 2 * max_len entries, so the live ones move to its front once
    every max_len steps.
    """

    def __init__(self, max_len: int | None = None) -> None:
        self.max_len = max_len
        self.buffer_k: Tensor | None = None
        self.buffer_v: Tensor | None = None
        self.start = self.end = 0  # the live entries are buffer[:, :, start:end]

    @property
    def k(self) -> Tensor | None:
        return None if self.buffer_k is None else self.buffer_k.narrow(2, self.start, self.end - self.start)

    @property
    def v(self) -> Tensor | None:
        return None if self.buffer_v is None else self.buffer_v.narrow(2, self.start, self.end - self.start)

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the keys and values of new positions; returns all live ones."""
        n = k.size(2)
        if self.buffer_k is None or self.end + n > self.buffer_k.size(2):
            self._make_room(k, v, n)
        self.buffer_k.narrow(2, self.end, n).copy_(k)  # narrow: one call, where slicing costs several
        self.buffer_v.narrow(2, self.end, n).copy_(v)
        self.end += n
        return self.k, self.v

    def _make_room(self, k: Tensor, v: Tensor, n: int) -> None:
        """A new buffer with room for n more entries (doubling when unbounded); live ones go first."""
        live = len(self)
        if self.max_len is not None:
            capacity = max(2 * self.max_len, live + n)
        else:
            capacity = max(2 * (live + n), 64)
        new_k = k.new_empty(k.size(0), k.size(1), capacity, k.size(3))
        new_v = v.new_empty(v.size(0), v.size(1), capacity, v.size(3))
        if live:
            new_k[:, :, :live] = self.k
            new_v[:, :, :live] = self.v
        self.buffer_k, self.buffer_v, self.start, self.end = new_k, new_v, 0, live

    def trim(self) -> None:
        """After a step: keep the newest max_len - 1 entries, so that the next token, appended,
        attends to exactly max_len keys (itself included)."""
        if self.max_len is not None and len(self) >= self.max_len:
            self.start = self.end - (self.max_len - 1)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search picks which hypotheses survive)."""
        if self.buffer_k is not None:
            self.buffer_k = self.buffer_k.index_select(0, index)
            self.buffer_v = self.buffer_v.index_select(0, index)


class DecoderCache:
    """One cache per decoder layer, for self-attention and (fixed) cross-attention keys/values."""

    def __init__(self, n_layers: int, max_len: int | None = None) -> None:
        self.self_attn = [KVCache(max_len) for _ in range(n_layers)]
        self.cross_attn = [KVCache() for _ in range(n_layers)]
        self.position = 0  # absolute position of the next token

    def __len__(self) -> int:
        return len(self.self_attn[0])

    def reorder(self, index: Tensor) -> None:
        for cache in self.self_attn + self.cross_attn:
            cache.reorder(index)


# ----------------------------------------------------------------------------------------------
# Multi-head attention (notes: "Multi-Head Attention")
# ----------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Concat(head_1..head_h) W_O with head_i = Attention(Q W_Q^i, K W_K^i, V W_V^i).

    Self-attention when `context` is None, cross-attention (queries from x, keys and values from
    the encoder's output) otherwise. Uses PyTorch's fused kernel unless the per-head weights are
    asked for; then it runs the explicit formula above and returns them.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        rope: RotaryEmbedding | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # W_Q for all heads at once
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W_O mixes the heads
        self.dropout = dropout
        self.rope = rope
        # QK-norm: RMSNorm on each head's queries and keys (a learned gain per channel) bounds the
        # scores, so large learning rates cannot blow up the softmax; None leaves q and k as projected
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else None
        # the factor on Q K^T: None is the paper's 1/sqrt(d_k); 1.0 switches the scaling off (the
        # Train tab's experiment: wide heads then saturate the softmax)
        self.scale: float | None = None

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def queries(self, x: Tensor) -> Tensor:
        """x (batch, T, d_model) -> per-head queries (batch, heads, T, head_dim), QK-normed if on."""
        q = self.split_heads(self.q_proj(x))
        return q if self.q_norm is None else self.q_norm(q)

    def keys(self, source: Tensor) -> Tensor:
        """Per-head keys of `source`, QK-normed if on (RoPE, when used, comes after)."""
        k = self.split_heads(self.k_proj(source))
        return k if self.k_norm is None else self.k_norm(k)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        position: int = 0,
        need_weights: bool = False,
        window: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (batch, T, d_model). Returns (output (batch, T, d_model), weights or None).

        position: absolute position of x's first token (for RoPE with a cache).
        window: with `causal`, each query sees at most the last `window` keys, itself included.
        """
        q = self.queries(x)
        if context is not None and cache is not None and len(cache):
            k, v = cache.k, cache.v  # cross-attention: the encoder output never changes
        else:
            source = x if context is None else context
            k = self.keys(source)
            v = self.split_heads(self.v_proj(source))
            if self.rope is not None and context is None:
                q = self.rope(q, position)
                k = self.rope(k, position)
            if cache is not None:
                k, v = cache.append(k, v)
        t_q, t_k = q.size(2), k.size(2)
        plain_causal = False  # the kernel can then apply the mask itself
        windowed = window is not None and t_k > window
        # one new query after its cached keys may see all of them (the cache keeps only the window)
        if causal and (t_q > 1 or windowed):
            if windowed:
                causal_part = sliding_window_mask(t_q, window, t_k, device=x.device)
            else:
                causal_part = causal_mask(t_q, t_k, device=x.device)
            plain_causal = mask is None and not windowed and t_q == t_k
            mask = causal_part if mask is None else mask & causal_part
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p, self.scale)
        else:
            weights = None
            if plain_causal:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=self.scale)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
        if cache is not None and context is None:
            cache.trim()
        out = out.transpose(1, 2).reshape(x.size(0), t_q, -1)  # concatenate the heads
        return self.out_proj(out), weights
