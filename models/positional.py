"""Positional encodings (notes: "Positional Encoding"): attention alone ignores order.

- sinusoidal: the paper's fixed table, added to the embeddings;
- learned: a trainable table, as BERT and GPT-2 use;
- rotary (RoPE): rotates queries and keys by their position, so scores depend on distance only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...). Shape (max_len, d)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table: X = X + PE[:T]."""

    def __init__(self, d_model: int, max_len: int = 4096) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, position: int = 0) -> Tensor:
        return x + self.table[position : position + x.size(1)]


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per position (fixed maximum length)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: Tensor, position: int = 0) -> Tensor:
        positions = torch.arange(position, position + x.size(1), device=x.device)
        return x + self.table(positions)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al. 2021): rotate each pair of features by angle pos * theta_i.

    q_m . k_n then depends only on m - n, so a cache can slide past the training length.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rotations: Tensor | None = None  # e^(i pos theta) per position, kept for decoding

    def forward(self, x: Tensor, position: int = 0) -> Tensor:
        """x: (batch, heads, T, head_dim), the first token at absolute `position`."""
        # is_compiling() first: torch.compile cannot trace is_inference_mode_enabled(), and a graph
        # break here split every attention layer out of the compiled training forward
        if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
            return self.rotate_from_table(x, position)
        t = torch.arange(position, position + x.size(2), device=x.device, dtype=torch.float32)
        angles = torch.outer(t, self.inv_freq)  # (T, head_dim/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return rotated.flatten(-2)

    def rotate_from_table(self, x: Tensor, position: int = 0) -> Tensor:
        """The same rotation as one complex product per pair, (x1 + i x2) e^(i pos theta), with
        the factors read from a table: decoding rotates one position per layer per token, and
        recomputing its angles each time cost more than the rotation."""
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * self.rotations_at(position, x.size(2), x.device)).flatten(-2).to(x.dtype)

    def rotations_at(self, position: int, length: int, device: torch.device) -> Tensor:
        """e^(i pos theta) for `length` positions from `position`: (length, head_dim/2), complex."""
        end = position + length
        table = self.rotations
        if table is None or table.size(0) < end or table.device != device:
            t = torch.arange(max(2 * end, 512), device=device, dtype=torch.float32)
            angles = torch.outer(t, self.inv_freq)
            table = self.rotations = torch.polar(torch.ones_like(angles), angles)
        return table[position:end]


def build_positional(kind: str, d_model: int, max_len: int) -> nn.Module | None:
    """The additive encoding for `kind`; None for 'rope' (applied inside attention) and 'none'."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max(max_len, 4096))
    if kind == "learned":
        return LearnedPositionalEmbedding(d_model, max_len)
    if kind in ("rope", "none"):
        return None
    raise ValueError(f"unknown positional encoding {kind!r}")
