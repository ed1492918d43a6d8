"""The three families of transformer (docs/concepts.md), built from models/blocks.py:

- `GPT`: decoder-only, causal self-attention, next-token prediction (text generation);
- `EncoderDecoder`: the original Transformer (translation);
- `EncoderClassifier`: encoder-only over a sequence of input vectors plus a CLS token (audio).

Every forward can return the attention weights of every layer and head (`need_weights=True`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from models.attention import DecoderCache, padding_mask
from models.attention_data import Attention, AttentionLayer, ModelAttention, stack_layers
from models.blocks import DecoderLayer, EncoderLayer
from models.hub import HubMixin
from models.positional import RotaryEmbedding, build_positional


class Output(NamedTuple):
    """What every model returns: logits, and per layer a dict of attention weights (or None)."""

    logits: Tensor
    attentions: list[dict[str, Tensor | None]] | None = None


def init_weights(module: nn.Module) -> None:
    """GPT-2 style: small normal weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


# ----------------------------------------------------------------------------------------------
# Decoder-only (GPT)
# ----------------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    vocab_size: int = 65
    context_len: int = 256
    n_layers: int = 6
    n_heads: int = 6
    d_model: int = 384
    d_ff: int = 1536
    dropout: float = 0.2
    positional: str = "rope"  # rope | learned | sinusoidal
    norm_first: bool = True
    bias: bool = False
    qk_norm: bool = False  # RMSNorm on each head's queries and keys before attention
    activation: str = "gelu"  # gelu | relu | relu2 (ReLU squared)
    tie_weights: bool = True  # the output head reuses the token embedding matrix


class GPT(nn.Module, HubMixin):
    """Token embedding -> N masked decoder blocks (no cross-attention) -> LayerNorm -> logits."""

    architecture = "gpt"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.positional = build_positional(c.positional, c.d_model, c.context_len)
        rope = RotaryEmbedding(c.d_model // c.n_heads) if c.positional == "rope" else None
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(
                c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.activation, False, rope, c.bias, c.qk_norm
            )
            for _ in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.embed.weight  # weight tying (Press & Wolf 2017)
        self.apply(init_weights)

    @property
    def context_len(self) -> int:
        return self.config.context_len

    @property
    def rolling_cache(self) -> bool:
        """Whether the model reads past its context through a sliding window (RoPE: scores depend
        on relative positions only). Then every layer attends to the last context_len positions,
        itself included, and the cache keeps just those keys; absolute positions cannot slide, so
        those models crop the text to its last context_len tokens instead."""
        return self.config.positional == "rope"

    @property
    def receptive_field(self) -> int:
        """How many of the latest tokens the next token's logits depend on. With the sliding window
        each layer looks context_len - 1 positions further back than the one above it."""
        if self.rolling_cache:
            return self.config.n_layers * (self.config.context_len - 1) + 1
        return self.config.context_len

    def new_cache(self) -> DecoderCache:
        window = self.config.context_len if self.rolling_cache else None
        return DecoderCache(self.config.n_layers, max_len=window)

    def forward(
        self, idx: Tensor, cache: DecoderCache | None = None, need_weights: bool = False, position: int = 0
    ) -> Output:
        """idx: (batch, T) token ids -> logits (batch, T, vocab). With a cache, T new tokens.

        position: absolute position of idx's first token when there is no cache (the cache counts
        its own). Longer than the context, a RoPE model attends through the sliding window.
        """
        position = cache.position if cache is not None else position
        window = self.config.context_len if self.rolling_cache else None
        x = self.embed(idx)
        if self.positional is not None:
            x = self.positional(x, position)
        x = self.dropout(x)
        attentions = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, cache=cache, layer=i, need_weights=need_weights, position=position, window=window)
            attentions.append(weights)
        if cache is not None:
            cache.position += idx.size(1)
        logits = self.lm_head(self.norm(x))
        return Output(logits, attentions if need_weights else None)

    def step(self, tokens: Tensor, cache: DecoderCache | None, position: int = 0) -> Tensor:
        """The decoding interface (models/decoding.py): logits for the new tokens."""
        return self(tokens, cache=cache, position=position).logits

    @torch.no_grad()
    def attention(self, idx: Tensor, labels: list[str]) -> ModelAttention:
        """One sequence (1, T) with a name per token -> logits and its "causal self" attention."""
        out = self(idx, need_weights=True)
        weights = stack_layers(out.attentions, "self")
        return ModelAttention(out.logits, {"causal self": Attention("causal self", weights, labels, labels)})

    def attention_layer(self, index: int = 0) -> AttentionLayer:
        """Layer `index`'s self-attention with what feeds it (for the Attention Lab)."""
        block = self.layers[index]
        norm = block.self_residual.norm if block.self_residual.norm_first else None
        return AttentionLayer(self.embed, self.positional, norm, block.self_attn, self.config.positional)


# ----------------------------------------------------------------------------------------------
# Encoder-decoder (the original Transformer)
# ----------------------------------------------------------------------------------------------


@dataclass
class EncoderDecoderConfig:
    vocab_size: int = 8000  # one vocabulary shared by source and target
    max_len: int = 128
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    n_heads: int = 8
    d_model: int = 256
    d_ff: int = 1024
    dropout: float = 0.1
    positional: str = "sinusoidal"  # sinusoidal | learned | rope | none
    norm_first: bool = True
    activation: str = "relu"
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


class Encoder(nn.Module):
    """A stack of encoder layers (with a final LayerNorm when pre-norm)."""

    def __init__(self, n_layers, d_model, n_heads, d_ff, dropout, norm_first, activation, rope=None):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first, activation, rope) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False):
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, mask, need_weights)
            attentions.append(weights)
        return self.norm(x), attentions


class EncoderDecoder(nn.Module, HubMixin):
    """Source -> encoder -> memory; target (shifted right) -> decoder with cross-attention -> logits."""

    architecture = "encoder_decoder"

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.positional = build_positional(c.positional, c.d_model, c.max_len)
        self.embed_scale = c.d_model**0.5  # the paper multiplies embeddings by sqrt(d_model)
        rope = RotaryEmbedding(c.d_model // c.n_heads) if c.positional == "rope" else None
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(
            c.n_encoder_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.activation, rope
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.activation, True, rope=rope)
            for _ in range(c.n_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(init_weights)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)
        self.lm_head.weight = self.embed.weight  # source, target and output share one matrix

    @property
    def context_len(self) -> int:
        return self.config.max_len

    def embed_tokens(self, ids: Tensor, position: int = 0) -> Tensor:
        x = self.embed(ids) * self.embed_scale
        if self.positional is not None:
            x = self.positional(x, position)
        return self.dropout(x)

    def encode(self, src: Tensor, need_weights: bool = False):
        """src (batch, S) -> (memory (batch, S, d), memory_mask, encoder attentions)."""
        mask = padding_mask(src != self.config.pad_id)
        memory, attentions = self.encoder(self.embed_tokens(src), mask, need_weights)
        return memory, mask, attentions

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> Output:
        position = cache.position if cache is not None else 0
        x = self.embed_tokens(tgt, position)
        attentions = []
        for i, layer in enumerate(self.decoder_layers):
            x, weights = layer(x, memory, memory_mask, cache=cache, layer=i, need_weights=need_weights)
            attentions.append(weights)
        if cache is not None:
            cache.position += tgt.size(1)
        return Output(self.lm_head(self.decoder_norm(x)), attentions if need_weights else None)

    def forward(self, src: Tensor, tgt: Tensor, need_weights: bool = False) -> Output:
        """Teacher forcing: tgt is the target shifted right (starts with a BOS/language token)."""
        memory, mask, enc_attn = self.encode(src, need_weights)
        out = self.decode(tgt, memory, mask, need_weights=need_weights)
        if not need_weights:
            return out
        attentions = [{"encoder_self": a["self"]} for a in enc_attn] + out.attentions
        return Output(out.logits, attentions)

    @torch.no_grad()
    def attention(
        self, src: Tensor, tgt: Tensor, source_labels: list[str], target_labels: list[str], written_labels: list[str]
    ) -> ModelAttention:
        """One source (1, S) and decoder input (1, T) -> logits and the "encoder self", "decoder
        self" and "cross" attention. Decoder rows are named by `written_labels`, the piece each row
        predicts (the decoder input shifted left, ending with </s>); decoder keys by `target_labels`,
        the pieces it read (starting with the language token)."""
        memory, mask, encoder = self.encode(src, need_weights=True)
        out = self.decode(tgt, memory, mask, need_weights=True)
        maps = {
            "encoder self": Attention("encoder self", stack_layers(encoder, "self"), source_labels, source_labels),
            "decoder self": Attention(
                "decoder self", stack_layers(out.attentions, "self"), written_labels, target_labels
            ),
            "cross": Attention("cross", stack_layers(out.attentions, "cross"), written_labels, source_labels),
        }
        return ModelAttention(out.logits, maps)

    def attention_layer(self, index: int = 0) -> AttentionLayer:
        """Encoder layer `index`'s self-attention with what feeds it (for the Attention Lab)."""
        block = self.encoder.layers[index]
        norm = block.attn_residual.norm if block.attn_residual.norm_first else None

        def embed(ids: Tensor) -> Tensor:
            return self.embed(ids) * self.embed_scale  # the paper scales embeddings by sqrt(d_model)

        return AttentionLayer(embed, self.positional, norm, block.self_attn, self.config.positional)

    def target_decoder(self, memory: Tensor, memory_mask: Tensor) -> TargetDecoder:
        """Bind an encoded source, giving the decoding interface of models/decoding.py."""
        return TargetDecoder(self, memory, memory_mask)


class TargetDecoder:
    """The decoder side of an EncoderDecoder with its source fixed: new_cache(), step()."""

    def __init__(self, model: EncoderDecoder, memory: Tensor, memory_mask: Tensor) -> None:
        self.model, self.memory, self.memory_mask = model, memory, memory_mask
        self.context_len = model.config.max_len
        self.rolling_cache = False

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.model.decoder_layers))

    def reorder(self, index: Tensor) -> None:
        """Beam search: the source rows follow their hypotheses."""
        self.memory = self.memory.index_select(0, index)
        self.memory_mask = self.memory_mask.index_select(0, index)

    def step(self, tokens: Tensor, cache: DecoderCache | None) -> Tensor:
        return self.model.decode(tokens, self.memory, self.memory_mask, cache=cache).logits


# ----------------------------------------------------------------------------------------------
# Encoder-only classifier (BERT/ViT style: a CLS token summarises the sequence)
# ----------------------------------------------------------------------------------------------


@dataclass
class EncoderClassifierConfig:
    input_dim: int = 64  # features per input token (e.g. mel bands of one frame)
    num_classes: int = 10
    max_len: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    dropout: float = 0.1
    positional: str = "learned"
    norm_first: bool = True


class EncoderClassifier(nn.Module, HubMixin):
    """Input vectors -> linear embedding, prepend CLS, add positions -> encoder -> head(CLS)."""

    architecture = "encoder_classifier"

    def __init__(self, config: EncoderClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_proj = nn.Linear(c.input_dim, c.d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))
        self.positional = build_positional(c.positional, c.d_model, c.max_len + 1)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.n_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, "gelu")
        self.head = nn.Linear(c.d_model, c.num_classes)
        self.apply(init_weights)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor, lengths: Tensor | None = None, need_weights: bool = False) -> Output:
        """x: (batch, T, input_dim); lengths: valid tokens per row (the rest is padding)."""
        b, t, _ = x.shape
        h = torch.cat([self.cls_token.expand(b, -1, -1), self.input_proj(x)], dim=1)
        if self.positional is not None:
            h = self.positional(h)
        mask = None
        if lengths is not None:
            valid = torch.arange(t + 1, device=x.device)[None, :] <= lengths[:, None]  # CLS + frames
            mask = padding_mask(valid)
        h, attentions = self.encoder(self.dropout(h), mask, need_weights)
        return Output(self.head(h[:, 0]), attentions if need_weights else None)
