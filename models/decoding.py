"""Autoregressive decoding (notes: "Inference"): greedy, sampling, beam search, on the KV cache.

Works with any `Decoder`: an object with `step(tokens, cache) -> logits (batch, T, vocab)`,
`new_cache()`, `context_len` and `rolling_cache` (GPT itself, or EncoderDecoder.target_decoder).
With a cache only the new token goes through the model; without one the whole (cropped)
sequence is recomputed at every step, as the notes' naive loop does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from models.attention import DecoderCache


class Decoder(Protocol):
    context_len: int
    rolling_cache: bool

    def new_cache(self) -> DecoderCache: ...

    def step(self, tokens: Tensor, cache: DecoderCache | None) -> Tensor: ...


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Next-token probabilities after temperature, top-k and nucleus (top-p) filtering.

    temperature <= 0 means greedy: all mass on the arg-max.
    """
    if temperature <= 0:
        probs = torch.zeros_like(logits)
        return probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already cover top_p (always keep the first)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(-1)


class _Stepper:
    """Feeds a growing sequence to a Decoder, with or without the KV cache."""

    def __init__(self, decoder: Decoder, use_cache: bool) -> None:
        self.decoder, self.use_cache = decoder, use_cache
        self.cache: DecoderCache | None = None

    def next_logits(self, tokens: Tensor, n_new: int) -> Tensor:
        """Logits for the position after `tokens`, whose last n_new tokens are new."""
        ctx = self.decoder.context_len
        if not self.use_cache:
            return self.decoder.step(tokens[:, -ctx:], None)[:, -1]
        full = self.cache is None or (not self.decoder.rolling_cache and tokens.size(1) > ctx)
        if full:  # (re)fill the cache from the visible window
            self.cache = self.decoder.new_cache()
            return self.decoder.step(tokens[:, -ctx:], self.cache)[:, -1]
        return self.decoder.step(tokens[:, -n_new:], self.cache)[:, -1]


@torch.no_grad()
def sample(
    decoder: Decoder,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield the next token ids (batch,) one step at a time; temperature 0 is greedy."""
    stepper = _Stepper(decoder, use_cache)
    tokens, n_new = prompt, prompt.size(1)
    for _ in range(max_new_tokens):
        probs = filter_logits(stepper.next_logits(tokens, n_new).float(), temperature, top_k, top_p)
        if temperature <= 0:
            nxt = probs.argmax(-1)
        else:
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        yield nxt
        if eos_id is not None and bool((nxt == eos_id).all()):
            return
        tokens, n_new = torch.cat([tokens, nxt[:, None]], dim=1), 1


def greedy(decoder: Decoder, prompt: Tensor, max_new_tokens: int, eos_id: int | None = None, use_cache=True):
    """The arg-max continuation (batch, <= max_new_tokens)."""
    steps = list(sample(decoder, prompt, max_new_tokens, 0.0, use_cache=use_cache, eos_id=eos_id))
    return torch.stack(steps, dim=1) if steps else prompt[:, :0]


@dataclass
class Hypothesis:
    tokens: list[int]
    log_prob: float
    score: float


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + |Y|) / 6)^alpha: divides log-probabilities so longer outputs are not punished."""
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    prompt: Tensor,
    beam_size: int,
    max_new_tokens: int,
    eos_id: int,
    alpha: float = 0.6,
) -> list[Hypothesis]:
    """Keep the `beam_size` most probable continuations of one prompt (1, T); best first.

    For an encoder-decoder, `decoder` must hold one source row; it is expanded to the beam.
    """
    if hasattr(decoder, "reorder"):
        decoder.reorder(torch.zeros(beam_size, dtype=torch.long, device=prompt.device))
    cache = decoder.new_cache()
    tokens = prompt.expand(beam_size, -1)
    logits = decoder.step(tokens, cache)[:, -1].float()
    scores = torch.zeros(beam_size, device=prompt.device)
    scores[1:] = float("-inf")  # all beams start identical: only the first may expand
    finished: list[Hypothesis] = []
    generated = tokens[:, :0]
    for t in range(1, max_new_tokens + 1):
        log_probs = logits.log_softmax(-1) + scores[:, None]  # (beam, vocab)
        vocab = log_probs.size(-1)
        top_scores, top_index = log_probs.view(-1).topk(2 * beam_size)  # spare room for ended ones
        beam_index, token = top_index // vocab, top_index % vocab
        keep_beams, keep_tokens, keep_scores = [], [], []
        for s, b, tok in zip(top_scores.tolist(), beam_index.tolist(), token.tolist(), strict=True):
            if s == float("-inf"):
                break
            if tok == eos_id:
                seq = generated[b].tolist()
                finished.append(Hypothesis(seq, s, s / length_penalty(len(seq) + 1, alpha)))
            else:
                keep_beams.append(b)
                keep_tokens.append(tok)
                keep_scores.append(s)
            if len(keep_beams) == beam_size:
                break
        best_alive = max(keep_scores, default=float("-inf"))
        best_done = max((h.score for h in finished), default=float("-inf"))
        # stop when no live beam can still beat the best finished one (log-probs only fall)
        if not keep_beams or best_done >= best_alive / length_penalty(max_new_tokens, alpha):
            break
        index = torch.tensor(keep_beams, device=prompt.device)
        scores_before = scores
        new_tokens = torch.tensor(keep_tokens, device=prompt.device)
        scores = torch.tensor(keep_scores, device=prompt.device)
        generated = torch.cat([generated.index_select(0, index), new_tokens[:, None]], dim=1)
        cache.reorder(index)
        if hasattr(decoder, "reorder") and len(keep_beams) != len(scores_before):
            # fewer live beams than before: the (identical) source rows shrink with them
            decoder.reorder(torch.zeros(len(keep_beams), dtype=torch.long, device=prompt.device))
        if t == max_new_tokens:
            break
        logits = decoder.step(new_tokens[:, None], cache)[:, -1].float()
    if not finished:  # nothing ended in time: the live beams are the answers
        finished = [
            Hypothesis(seq, s, s / length_penalty(len(seq), alpha))
            for seq, s in zip(generated.tolist(), scores.tolist(), strict=True)
        ]
    return sorted(finished, key=lambda h: h.score, reverse=True)[:beam_size]
