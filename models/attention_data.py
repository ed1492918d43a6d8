"""The attention contract: what every model hands out about where it attended.

Each model has a public `attention(...)` method that runs one input and returns `ModelAttention`:
the logits and, per kind of attention ("causal self", "encoder self", "decoder self", "cross",
"self"), one `Attention` holding every layer and head as one tensor with the names of the
positions on both axes. What is read from attention is computed here once, for every model:
the CLS row (what a classifier's CLS token draws from the other tokens) and attention rollout.

The Attention Lab needs more than weights: `AttentionLayer` gives one layer's pieces (how tokens
are embedded, the positional encoding, the pre-norm and the attention module with its
projections), so no caller reaches into a model's private attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.analysis import attention_rollout


@dataclass
class Attention:
    """All layers and heads of one kind of attention for one input (batch of one)."""

    kind: str
    weights: Tensor  # (layers, heads, T_query, T_key), float32, rows sum to 1
    query_labels: list[str]  # one name per query position
    key_labels: list[str]  # one name per key position
    cls: bool = False  # position 0 is a CLS token whose final state is classified
    grid: tuple[int, int] | None = None  # keys 1.. are patches in raster order on this grid (ViT)
    key_times: Tensor | None = None  # keys 1.. are moments of a recording, their times in seconds

    def __post_init__(self) -> None:
        if self.weights.dim() != 4:
            raise ValueError(f"weights must be (layers, heads, T_query, T_key), got {tuple(self.weights.shape)}")
        t_q, t_k = self.weights.shape[-2:]
        if len(self.query_labels) != t_q or len(self.key_labels) != t_k:
            raise ValueError(
                f"{len(self.query_labels)} query and {len(self.key_labels)} key labels for {t_q} x {t_k} weights"
            )

    @property
    def layers(self) -> int:
        return self.weights.shape[0]

    @property
    def heads(self) -> int:
        return self.weights.shape[1]

    def select(self, layer: int | None = None, head: int | None = None) -> Tensor:
        """(T_query, T_key) of one layer and head (0-based); None averages over that axis."""
        w = self.weights.mean(0) if layer is None else self.weights[_index(layer, self.layers, "layer")]
        return w.mean(0) if head is None else w[_index(head, self.heads, "head")]

    def cls_rows(self) -> Tensor:
        """(layers, heads, T_key - 1): what the CLS query draws from every other token."""
        self._need_cls()
        return self.weights[:, :, 0, 1:]

    def rollout(self, layers: int | None = None) -> Tensor:
        """Attention rollout (models.analysis) through the first `layers` layers (all: None): (T, T)."""
        count = self.layers if layers is None else _index(layers - 1, self.layers, "layer") + 1
        return attention_rollout([self.weights[i : i + 1] for i in range(count)])[0]

    def rollouts(self) -> Tensor:
        """Rollout through layers 1..l for every l: (layers, 1, T, T), shaped like `weights` with one
        "head" per layer, so that a rollout can be looked at like any other attention."""
        return torch.stack([self.rollout(i + 1) for i in range(self.layers)])[:, None]

    def cls_rollout(self) -> Tensor:
        """(T_key - 1,): the CLS token's rollout over the other tokens, rescaled to sum to 1."""
        self._need_cls()
        flow = self.rollout()[0, 1:]
        return flow / flow.sum()

    def as_rollout(self) -> Attention:
        """The rollouts as an Attention of kind "rollout" (one pseudo-head per depth)."""
        return Attention(
            "rollout", self.rollouts(), self.query_labels, self.key_labels, self.cls, self.grid, self.key_times
        )

    def _need_cls(self) -> None:
        if not self.cls:
            raise ValueError(f"{self.kind} attention has no CLS token")


def _index(index: int, count: int, what: str) -> int:
    if not 0 <= index < count:
        raise IndexError(f"{what.capitalize()} {index + 1} does not exist: this attention has {count} {what}s.")
    return index


def stack_layers(per_layer: list[dict[str, Tensor | None]], name: str) -> Tensor:
    """A forward pass's attentions ([{name: (1, H, Tq, Tk)}, ...] per layer) -> (layers, H, Tq, Tk)."""
    return torch.cat([a[name] for a in per_layer if a.get(name) is not None], dim=0).detach().float()


@dataclass
class ModelAttention:
    """What a model's `attention(...)` returns: its logits and every kind of attention it has."""

    logits: Tensor
    maps: dict[str, Attention] = field(default_factory=dict)

    def __getitem__(self, kind: str) -> Attention:
        if kind not in self.maps:
            raise KeyError(f"no {kind!r} attention here; there is {', '.join(self.maps)}")
        return self.maps[kind]


@dataclass
class AttentionLayer:
    """One self-attention layer and what comes before it, for looking inside step by step."""

    embed: Callable[[Tensor], Tensor]  # token ids (T,) -> embeddings (T, d), scaled as the model scales them
    positional: nn.Module | None  # the additive positional encoding (None: RoPE inside attention, or none)
    norm: nn.Module | None  # pre-norm: attention reads norm(X); post-norm: None
    attention: nn.Module  # a models.attention.MultiHeadAttention (q/k/v/out projections, split_heads, rope)
    positional_name: str = ""  # "sinusoidal", "learned", "rope"
