"""A GPT's cached one-token step with the module calls taken out, for serving (notes: "Inference").

Decoding with a KV cache sends one token at a time through the model. Each step multiplies one
row by every weight matrix, so its cost is the weights it reads plus a fixed cost per operation.
`GPT.step` goes through the modules (about 120 module calls per token at nanoGPT's size), and
their calls cost a good part of the step (bench/generation.py races both ways: the README gives
the figures). `FastDecoder` runs the same step as a flat list of tensor operations:

- the same operations in the same order on the same numbers as `GPT.step`: its logits are
  `GPT.step`'s bit for bit (tests/test_generation.py compares every one, past the context too);
- queries, keys and values come from one product with the three matrices stacked: one call
  instead of three, and each output is the same dot product as before (that same test checks
  that this machine's BLAS gives the same numbers);
- float16-kept matrices (models.checkpoint.Float16Linear) are upcast into one scratch buffer that
  the decoder reuses, so no step allocates megabytes;
- what a step reads of the model (weights, norms, sizes, views into the scratch buffer) is looked
  up once, when the decoder is built, and the step leaves out the tensor calls that only rename
  memory where it can (no transposes for one position, RoPE's rotations looked up once per token):
  203 ATen calls per token at nanoGPT's size where the modules make 311, each a few microseconds.

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
        ropes = {id(layer.self_attn.rope) for layer in model.layers}
        # written out below: pre-norm float32 GPTs whose layers share one RoPE table (or none);
        # anything else keeps the modules
        self.fast = model.config.norm_first and model.embed.weight.dtype == torch.float32 and len(ropes) == 1
        if self.fast:
            self._look_up(model)

    def _look_up(self, model: GPT) -> None:
        embedding = model.embed.weight
        stacked = [_stacked_projections(layer.self_attn) for layer in model.layers]
        linears = [layer.self_attn.out_proj for layer in model.layers] + [model.lm_head]
        linears += [fc for layer in model.layers for fc in (layer.ff.fc1, layer.ff.fc2)]
        kept = [w for w, _ in stacked] + [linear.weight for linear in linears]
        largest = max((w.numel() for w in kept if w.dtype != embedding.dtype), default=0)
        scratch = torch.empty(largest, dtype=embedding.dtype, device=embedding.device)
        self.blocks = [_Block(layer, qkv, scratch) for layer, qkv in zip(model.layers, stacked, strict=True)]
        self.rope = model.layers[0].self_attn.rope
        self.final_norm = _norm_arguments(model.norm)
        self.head = _Matrix(model.lm_head.weight, model.lm_head.bias, scratch)

    def new_cache(self) -> DecoderCache:
        return self.model.new_cache()

    def step(self, tokens: Tensor, cache: DecoderCache | None, position: int = 0) -> Tensor:
        one_cached_token = cache is not None and tokens.size(1) == 1
        if not (self.fast and one_cached_token) or self.model.training or torch.is_grad_enabled():
            return self.model.step(tokens, cache, position)
        return self._one_token(tokens, cache)

    def _one_token(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """GPT.forward for one new token per row, with the cache; see the module's docstring."""
        model, position, batch = self.model, cache.position, tokens.size(0)
        x = F.embedding(tokens, model.embed.weight)
        if model.positional is not None:
            x = model.positional(x, position)
        rotation = None if self.rope is None else self.rope.rotations_at(position, 1, x.device)
        for block, layer_cache in zip(self.blocks, cache.self_attn, strict=True):
            h = F.layer_norm(x, *block.norm1)
            # (batch, 1, 3 * d_model) holds Q, K and V, each (batch, heads, 1, head_dim) in memory order:
            # with a single position the heads need no transpose
            q, k, v = block.qkv(h).view(batch, 3, block.n_heads, 1, block.head_dim).unbind(1)
            if block.q_norm is not None:
                q, k = block.q_norm(q), block.k_norm(k)
            if rotation is not None:
                q, k = _rotate(q, rotation), _rotate(k, rotation)
            k, v = layer_cache.append(k, v)
            # one query after its cached keys sees all of them: no mask (the cache keeps the window)
            out = F.scaled_dot_product_attention(q, k, v, scale=block.scale)
            layer_cache.trim()
            x = x + block.out(out.reshape(batch, 1, -1))  # the heads side by side, as for one position
            h = F.layer_norm(x, *block.norm2)
            x = x + block.fc2(block.act(block.fc1(h)))
        cache.position += 1
        return self.head(F.layer_norm(x, *self.final_norm))


class _Matrix:
    """One linear layer as F.linear takes it. A float16-kept weight is upcast into its view of the
    decoder's scratch buffer before each product (as Float16Linear's `.to()` does, without
    allocating)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, scratch: Tensor) -> None:
        self.kept, self.bias = weight.detach(), bias
        self.upcast = weight.dtype != scratch.dtype
        self.weight = scratch[: weight.numel()].view(weight.shape) if self.upcast else self.kept

    def __call__(self, x: Tensor) -> Tensor:
        if self.upcast:
            self.weight.copy_(self.kept)
        return F.linear(x, self.weight, self.bias)


class _Block:
    """What one decoder layer's step reads, looked up once."""

    def __init__(self, layer: nn.Module, qkv: tuple[Tensor, Tensor | None], scratch: Tensor) -> None:
        attn, ff = layer.self_attn, layer.ff
        self.norm1, self.norm2 = _norm_arguments(layer.self_residual.norm), _norm_arguments(layer.ff_residual.norm)
        self.qkv = _Matrix(*qkv, scratch)
        self.n_heads, self.head_dim, self.scale = attn.n_heads, attn.head_dim, attn.scale
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.out = _Matrix(attn.out_proj.weight, attn.out_proj.bias, scratch)
        self.fc1 = _Matrix(ff.fc1.weight, ff.fc1.bias, scratch)
        self.act = ff.act.forward  # the module's own function, without the call machinery around it
        self.fc2 = _Matrix(ff.fc2.weight, ff.fc2.bias, scratch)


def _rotate(x: Tensor, rotation: Tensor) -> Tensor:
    """RotaryEmbedding.rotate_from_table for a float32 x with its rotations already looked up."""
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rotation).flatten(-2)


def _stacked_projections(attn: nn.Module) -> tuple[Tensor, Tensor | None]:
    """W_Q, W_K and W_V on top of each other (and their biases): one product gives all three."""
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    weight = torch.cat([p.weight.detach() for p in projections])
    biases = [p.bias for p in projections]
    bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
    return weight, bias


def _norm_arguments(norm: nn.LayerNorm) -> tuple:
    """F.layer_norm's arguments after the input, for `norm`."""
    return norm.normalized_shape, norm.weight, norm.bias, norm.eps
