"""The whole forward pass of a decoder, one box of the diagram at a time, with every number kept.

`trace_gpt` (a GPT) and `trace_decoder` (the decoder of an EncoderDecoder, cross-attention
included) run the model's own public sub-modules in the order its forward runs them: embedding
(+ positions), then per layer LayerNorm -> Q, K, V -> attention -> residual add (-> LayerNorm ->
cross-attention -> residual add) -> LayerNorm -> feed-forward -> residual add, then the final
LayerNorm and the output head. Nothing is changed in the model (read-only, no hooks), so the
trace's logits equal the model's forward; the tests hold it to that.

Two readings of the residual stream come with it:
- what each sub-layer adds (pre-norm: the final hidden state is the embedding plus the sum of all
  sub-layer outputs, `ForwardTrace.stream_sum`);
- the logit lens: the stream after each layer read out through the final norm and the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from models.blocks import DecoderLayer, Residual
from models.transformer import GPT, EncoderDecoder


@dataclass
class SublayerTrace:
    """One sub-layer with its residual connection; every tensor is (T, d_model) for one sequence.

    Pre-norm: reads = LayerNorm(before), after = before + output.
    Post-norm: reads = before, after = LayerNorm(before + output).
    """

    kind: str  # "self-attention", "cross-attention" or "feed-forward"
    norm_first: bool
    before: Tensor
    reads: Tensor
    output: Tensor
    after: Tensor
    norm_weight: Tensor  # the LayerNorm's gamma and beta (d_model,)
    norm_bias: Tensor


@dataclass
class AttentionTrace(SublayerTrace):
    """Q = reads W_Q, K and V from reads (self) or the encoder's memory (cross), per head."""

    q: Tensor = None  # (heads, T, d_k), as projected (and QK-normed, where the model has QK-norm)
    k: Tensor = None  # (heads, S, d_k)
    v: Tensor = None  # (heads, S, d_k)
    q_rotated: Tensor | None = None  # RoPE: Q and K after the rotation by position
    k_rotated: Tensor | None = None
    weights: Tensor = None  # (heads, T, S) softmax(QK^T / sqrt(d_k)) with the mask
    heads: Tensor = None  # (T, d_model) the heads' outputs concatenated, before W_O
    qk_norm: bool = False  # each head's q and k went through an RMSNorm (with a learned gain)


@dataclass
class FeedForwardTrace(SublayerTrace):
    """FFN(x) = W_2 act(W_1 x + b_1) + b_2."""

    activation: str = "gelu"
    hidden: Tensor = None  # (T, d_ff) W_1 x + b_1, before the activation
    activated: Tensor = None  # (T, d_ff) after it


@dataclass
class ForwardTrace:
    """Everything one forward pass computed, for one sequence (batch dimension dropped)."""

    tokens: list[int]
    positional: str  # "rope", "learned", "sinusoidal" or "none"
    token_embedding: Tensor  # (T, d) the embedding rows (times the model's scale, if any)
    position_embedding: Tensor | None  # (T, d) what the positional encoding added; None for RoPE
    embedded: Tensor  # (T, d) the stream entering layer 1
    layers: list[list[SublayerTrace]]  # per layer: attention, [cross-attention], feed-forward
    final_hidden: Tensor  # (T, d) the stream after the last layer
    final_normed: Tensor  # (T, d) after the final LayerNorm
    final_norm_weight: Tensor | None
    final_norm_bias: Tensor | None
    logits: Tensor  # (T, vocab)
    lens_logits: Tensor  # (layers + 1, T, vocab): the stream after the embedding and each layer, read out
    memory: Tensor | None = None  # (S, d) the encoder's output (encoder-decoder only)
    norm_first: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def contributions(self) -> list[tuple[str, Tensor]]:
        """(name, (T, d)) of everything written into the residual stream, in order: the embedding,
        then every sub-layer's output. Pre-norm only: they sum to `final_hidden`."""
        parts = [("embedding", self.embedded)]
        for i, layer in enumerate(self.layers, start=1):
            parts += [(f"layer {i} {sub.kind}", sub.output) for sub in layer]
        return parts

    def stream_sum(self) -> Tensor:
        """The residual stream summed back from its parts (equals final_hidden in a pre-norm model)."""
        return torch.stack([part for _, part in self.contributions()]).sum(0)


def _norm_parts(norm: nn.Module, d_model: int) -> tuple[Tensor, Tensor]:
    if isinstance(norm, nn.LayerNorm):
        return norm.weight.detach(), norm.bias.detach()
    return torch.ones(d_model), torch.zeros(d_model)


def _attention(
    residual: Residual,
    attn: MultiHeadAttention,
    x: Tensor,
    kind: str,
    context: Tensor | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
) -> AttentionTrace:
    """x (1, T, d) through one attention sub-layer, written out as MultiHeadAttention.forward runs
    it (the explicit formula, so the weights are kept)."""
    reads = residual.norm(x) if residual.norm_first else x
    source = reads if context is None else context
    q, k, v = (
        attn.queries(reads),  # QK-normed when the model has QK-norm
        attn.keys(source),
        attn.split_heads(attn.v_proj(source)),
    )
    q_rot = k_rot = None
    if attn.rope is not None and context is None:
        q_rot, k_rot = attn.rope(q, 0), attn.rope(k, 0)
    t_q, t_k = q.size(2), k.size(2)
    if causal:
        allowed = causal_mask(t_q, t_k, device=x.device)
        mask = allowed if mask is None else mask & allowed
    q_used, k_used = (q, k) if q_rot is None else (q_rot, k_rot)
    out, weights = scaled_dot_product_attention(q_used, k_used, v, mask, scale=getattr(attn, "scale", None))
    heads = out.transpose(1, 2).reshape(1, t_q, -1)
    output = attn.out_proj(heads)
    after = x + output if residual.norm_first else residual.norm(x + output)
    gamma, beta = _norm_parts(residual.norm, x.size(-1))
    return AttentionTrace(
        kind,
        residual.norm_first,
        x[0],
        reads[0],
        output[0],
        after[0],
        gamma,
        beta,
        q=q[0],
        k=k[0],
        v=v[0],
        q_rotated=None if q_rot is None else q_rot[0],
        k_rotated=None if k_rot is None else k_rot[0],
        weights=weights[0],
        heads=heads[0],
        qk_norm=attn.q_norm is not None,
    )


def _feed_forward(residual: Residual, layer: DecoderLayer, x: Tensor) -> FeedForwardTrace:
    ff = layer.ff
    reads = residual.norm(x) if residual.norm_first else x
    hidden = ff.fc1(reads)
    activated = ff.act(hidden)
    output = ff.fc2(activated)
    after = x + output if residual.norm_first else residual.norm(x + output)
    gamma, beta = _norm_parts(residual.norm, x.size(-1))
    return FeedForwardTrace(
        "feed-forward",
        residual.norm_first,
        x[0],
        reads[0],
        output[0],
        after[0],
        gamma,
        beta,
        activation=ff.activation,
        hidden=hidden[0],
        activated=activated[0],
    )


def _run_layers(
    layers: nn.ModuleList,
    x: Tensor,
    final_norm: nn.Module,
    head: nn.Linear,
    memory: Tensor | None = None,
    memory_mask: Tensor | None = None,
) -> tuple[list[list[SublayerTrace]], Tensor, Tensor]:
    """Every decoder layer step by step; returns (layers, final hidden, logit-lens logits)."""
    traces, lens = [], [head(final_norm(x))[0]]
    for layer in layers:
        subs: list[SublayerTrace] = []
        causal = getattr(layer, "causal", True)  # the Train tab's experiment can switch the mask off
        attn = _attention(layer.self_residual, layer.self_attn, x, "self-attention", causal=causal)
        subs.append(attn)
        x = attn.after[None]
        if layer.cross_attn is not None:
            cross = _attention(
                layer.cross_residual, layer.cross_attn, x, "cross-attention", context=memory, mask=memory_mask
            )
            subs.append(cross)
            x = cross.after[None]
        ff = _feed_forward(layer.ff_residual, layer, x)
        subs.append(ff)
        x = ff.after[None]
        traces.append(subs)
        lens.append(head(final_norm(x))[0])
    return traces, x, torch.stack(lens)


def _finish(
    tokens: list[int],
    positional: str,
    token_embedding: Tensor,
    position_embedding: Tensor | None,
    embedded: Tensor,
    layers,
    final_norm: nn.Module,
    head: nn.Linear,
    norm_first: bool,
    memory: Tensor | None = None,
    memory_mask: Tensor | None = None,
) -> ForwardTrace:
    traces, hidden, lens = _run_layers(layers, embedded, final_norm, head, memory, memory_mask)
    normed = final_norm(hidden)
    gamma, beta = _norm_parts(final_norm, hidden.size(-1)) if isinstance(final_norm, nn.LayerNorm) else (None, None)
    return ForwardTrace(
        tokens=tokens,
        positional=positional,
        token_embedding=token_embedding[0],
        position_embedding=None if position_embedding is None else position_embedding[0],
        embedded=embedded[0],
        layers=traces,
        final_hidden=hidden[0],
        final_normed=normed[0],
        final_norm_weight=gamma,
        final_norm_bias=beta,
        logits=head(normed)[0],
        lens_logits=lens,
        memory=None if memory is None else memory[0],
        norm_first=norm_first,
    )


def _check(ids: list[int], limit: int, what: str) -> Tensor:
    if not ids:
        raise ValueError(f"{what} is empty: the forward pass needs at least one token")
    if len(ids) > limit:
        raise ValueError(f"{what} has {len(ids)} tokens, more than the model's {limit}")
    return torch.tensor([list(ids)])


@torch.no_grad()
def trace_gpt(model: GPT, ids: list[int]) -> ForwardTrace:
    """The forward pass of `model` (in eval mode) on token ids (at most context_len of them)."""
    idx = _check(ids, model.context_len, "the sequence")
    tokens = model.embed(idx)
    x = tokens if model.positional is None else model.positional(tokens, 0)
    added = None if model.positional is None else x - tokens
    return _finish(
        list(ids),
        model.config.positional,
        tokens,
        added,
        x,
        model.layers,
        model.norm,
        model.lm_head,
        model.config.norm_first,
    )


@torch.no_grad()
def trace_decoder(model: EncoderDecoder, source_ids: list[int], target_ids: list[int]) -> ForwardTrace:
    """The decoder's forward pass for `target_ids` (the decoder input: language token first) given
    the encoded `source_ids`; the encoder runs as a whole (its output is `memory`)."""
    src = _check(source_ids, model.config.max_len, "the source")
    tgt = _check(target_ids, model.config.max_len, "the target")
    memory, memory_mask, _ = model.encode(src)
    tokens = model.embed(tgt) * model.embed_scale
    x = tokens if model.positional is None else model.positional(tokens, 0)
    added = None if model.positional is None else x - tokens
    return _finish(
        list(target_ids),
        model.config.positional,
        tokens,
        added,
        x,
        model.decoder_layers,
        model.decoder_norm,
        model.lm_head,
        model.config.norm_first,
        memory,
        memory_mask,
    )
