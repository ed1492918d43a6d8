"""A GPT's cached one-token step with the module calls taken out, for serving (notes: "Inference").

Decoding with a KV cache sends one token at a time through the model. Each step multiplies one
row by every weight matrix, so its cost is the weights it reads plus a fixed cost per operation.
`GPT.step` goes through the modules (about 120 calls per token at nanoGPT's size), and their
calls cost about an eighth of the step (bench/generation.py races both ways). `FastDecoder` runs
the same step as a flat list of tensor operations:

- the same operations in the same order on the same numbers as `GPT.step`: its logits are
  `GPT.step`'s bit for bit (tests/test_generation.py compares every one, past the context too);
- queries, keys and values come from one product with the three matrices stacked: one call
  instead of three, and each output is the same dot product as before (that same test checks
  that this machine's BLAS gives the same numbers);
- float16-kept matrices (models.checkpoint.Float16Linear) are upcast into one scratch buffer that
  the decoder reuses, so no step allocates megabytes.

Prompts, uncached steps and anything that needs gradients go through the model as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DecoderCache
from models.transformer import GPT


class FastDecoder:
    """The Decoder interface of models/decoding.py for a GPT in eval mode.

    It copies what it needs from the model's weights when built (the stacked query/key/value
    matrices): build it again if they change. It keeps a scratch buffer, so one decoder serves one
    generation at a time; building one costs well under a millisecond for the Generate tab's GPT.
    """

    def __init__(self, model: GPT) -> None:
        self.model = model
        self.context_len, self.rolling_cache = model.context_len, model.rolling_cache
        self.receptive_field = model.receptive_field
        self.fast = model.config.norm_first  # post-norm is not written out below; it keeps the modules
        self.qkv = [_stacked_projections(layer.self_attn) for layer in model.layers]
        dtype = model.embed.weight.dtype  # what the model computes in (float32 when served)
        blocks = [(layer.self_attn.out_proj, layer.ff.fc1, layer.ff.fc2) for layer in model.layers]
        matrices = [w for w, _ in self.qkv] + [linear.weight for block in blocks for linear in block]
        largest = max((w.numel() for w in matrices if w.dtype != dtype), default=0)
        self.scratch = torch.empty(largest, dtype=dtype, device=model.embed.weight.device)

    def new_cache(self) -> DecoderCache:
        return self.model.new_cache()

    def step(self, tokens: Tensor, cache: DecoderCache | None, position: int = 0) -> Tensor:
        one_cached_token = cache is not None and tokens.size(1) == 1
        if not (self.fast and one_cached_token) or self.model.training or torch.is_grad_enabled():
            return self.model.step(tokens, cache, position)
        return self._one_token(tokens, cache)

    def _one_token(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """GPT.forward for one new token per row, with the cache; see the module's docstring."""
        model, position = self.model, cache.position
        batch = tokens.size(0)
        x = F.embedding(tokens, model.embed.weight)
        if model.positional is not None:
            x = model.positional(x, position)
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            h = _layer_norm(layer.self_residual.norm, x)
            weight, bias = self.qkv[i]
            qkv = F.linear(h, self._upcast(weight), bias).view(batch, 1, 3, attn.n_heads, attn.head_dim)
            q, k, v = (part.transpose(1, 2) for part in qkv.unbind(2))  # each (batch, heads, 1, head_dim)
            if attn.q_norm is not None:
                q, k = attn.q_norm(q), attn.k_norm(k)
            if attn.rope is not None:
                q, k = attn.rope(q, position), attn.rope(k, position)
            layer_cache = cache.self_attn[i]
            k, v = layer_cache.append(k, v)
            # one query after its cached keys sees all of them: no mask (the cache keeps the window)
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
            layer_cache.trim()
            x = x + self._linear(attn.out_proj, out.transpose(1, 2).reshape(batch, 1, -1))
            ff = layer.ff
            h = _layer_norm(layer.ff_residual.norm, x)
            x = x + self._linear(ff.fc2, ff.act(self._linear(ff.fc1, h)))
        cache.position += 1
        return model.lm_head(model.norm(x))

    def _linear(self, linear: nn.Module, x: Tensor) -> Tensor:
        return F.linear(x, self._upcast(linear.weight), linear.bias)

    def _upcast(self, weight: Tensor) -> Tensor:
        """The matrix in the model's dtype: a float16-kept one upcast into the scratch buffer."""
        if weight.dtype == self.scratch.dtype:
            return weight
        return self.scratch[: weight.numel()].view(weight.shape).copy_(weight)


def _stacked_projections(attn: nn.Module) -> tuple[Tensor, Tensor | None]:
    """W_Q, W_K and W_V on top of each other (and their biases): one product gives all three."""
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    weight = torch.cat([p.weight.detach() for p in projections])
    biases = [p.bias for p in projections]
    bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
    return weight, bias


def _layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
