"""Autoregressive decoding (notes: "Inference"): greedy, sampling, beam search, on the KV cache.

Works with any `Decoder`: an object with `step(tokens, cache) -> logits (batch, T, vocab)`,
`new_cache()`, `context_len` and `rolling_cache` (GPT itself, or EncoderDecoder.target_decoder).
With a cache only the new token goes through the model; without one everything the next token
depends on is recomputed at every step, as a naive generation loop does (docs/concepts.md). Both compute the same thing
past the context: a rolling decoder (RoPE) attends through a sliding window of context_len
positions in every layer, so the next token depends on its `receptive_field` latest tokens, which
the uncached path recomputes at their own positions; any other decoder crops the text to its last
context_len tokens and reads them from position 0, refilling its cache every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from models.attention import DecoderCache


class Decoder(Protocol):
    context_len: int
    rolling_cache: bool  # uncached decoding then also needs `receptive_field` and step(..., position=)

    def new_cache(self) -> DecoderCache: ...

    def step(self, tokens: Tensor, cache: DecoderCache | None) -> Tensor: ...


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Next-token probabilities after temperature, top-k and nucleus (top-p) filtering.

    temperature <= 0 means greedy: all mass on the arg-max.
    """
    if temperature <= 0:
        probs = torch.zeros_like(logits)
        return probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    if temperature != 1.0:  # dividing by 1 changes nothing, and costs a call per token
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


@contextmanager
def _one_thread():
    """One token's matrix-vector products are too small to share between cores: waking a second
    thread costs more than it saves, and far more when the other core is busy."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Stepper:
    """Feeds a growing sequence to a Decoder, with or without the KV cache."""

    def __init__(self, decoder: Decoder, use_cache: bool) -> None:
        self.decoder, self.use_cache = decoder, use_cache
        self.cache: DecoderCache | None = None

    def next_logits(self, tokens: Tensor, n_new: int) -> Tensor:
        """Logits for the position after `tokens`, whose last n_new tokens are new."""
        decoder, length = self.decoder, tokens.size(1)
        if decoder.rolling_cache:
            if not self.use_cache:
                start = max(0, length - decoder.receptive_field)  # older tokens cannot matter
                return decoder.step(tokens[:, start:], None, position=start)[:, -1]
            if self.cache is None:  # the prompt, all of it, through the sliding window
                self.cache = decoder.new_cache()
                return decoder.step(tokens, self.cache)[:, -1]
            with _one_thread():
                return decoder.step(tokens[:, -n_new:], self.cache)[:, -1]
        cropped = tokens[:, -decoder.context_len :]
        if not self.use_cache:
            return decoder.step(cropped, None)[:, -1]
        if self.cache is None or length > decoder.context_len:  # (re)fill from the visible window
            self.cache = decoder.new_cache()
            return decoder.step(cropped, self.cache)[:, -1]
        with _one_thread():
            return decoder.step(tokens[:, -n_new:], self.cache)[:, -1]


@torch.inference_mode()
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
    return beam_search_batch(decoder, prompt, beam_size, max_new_tokens, eos_id, alpha)[0]


@torch.no_grad()
def beam_search_batch(
    decoder: Decoder,
    prompts: Tensor,
    beam_size: int,
    max_new_tokens: int,
    eos_id: int,
    alpha: float = 0.6,
) -> list[list[Hypothesis]]:
    """Beam search for many prompts (B, T) at once: one model call per step for all B * beam rows.

    Per prompt, each step takes the 2 * beam best extensions (room for ones that end), moves
    those ending in EOS to the finished list and keeps the best `beam` others alive. A prompt stops
    when no live beam, even at the largest length penalty, can beat its best finished one; it then
    leaves the batch. `decoder` must hold B source rows (it is expanded to the beams).
    Returns, per prompt, its hypotheses best first.
    """
    n_rows, k, device = prompts.size(0), beam_size, prompts.device
    rows = torch.arange(n_rows, device=device).repeat_interleave(k)
    if hasattr(decoder, "reorder"):
        decoder.reorder(rows)
    cache = decoder.new_cache()
    logits = decoder.step(prompts.index_select(0, rows), cache)[:, -1].float()
    scores = torch.full((n_rows, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams of a row start identical: only the first may expand
    finished: list[list[Hypothesis]] = [[] for _ in range(n_rows)]
    results: list[list[Hypothesis] | None] = [None] * n_rows
    active = list(range(n_rows))  # prompt index of each row still searching
    generated = prompts.new_zeros(n_rows * k, 0)
    for t in range(1, max_new_tokens + 1):
        n = len(active)
        log_probs = logits.log_softmax(-1).view(n, k, -1) + scores[:, :, None]
        vocab = log_probs.size(-1)
        top_scores, top_index = log_probs.view(n, -1).topk(2 * k)  # spare room for ended ones
        top_beam, top_token = (top_index // vocab).tolist(), (top_index % vocab).tolist()
        new_scores = torch.full((n, k), float("-inf"), device=device)
        new_beams = torch.zeros(n, k, dtype=torch.long)
        new_tokens = torch.full((n, k), eos_id, dtype=torch.long)
        still = []
        for i, row_scores in enumerate(top_scores.tolist()):
            done, kept = finished[active[i]], 0
            for s, b, tok in zip(row_scores, top_beam[i], top_token[i], strict=True):
                if s == float("-inf"):
                    break
                if tok == eos_id:
                    seq = generated[i * k + b].tolist()
                    done.append(Hypothesis(seq, s, s / length_penalty(len(seq) + 1, alpha)))
                else:
                    new_scores[i, kept], new_beams[i, kept], new_tokens[i, kept] = s, b, tok
                    kept += 1
                if kept == k:
                    break
            best_alive = new_scores[i, 0].item() if kept else float("-inf")
            best_done = max((h.score for h in done), default=float("-inf"))
            if not kept or best_done >= best_alive / length_penalty(max_new_tokens, alpha):
                results[active[i]] = sorted(done, key=lambda h: h.score, reverse=True)[:k]
            else:
                still.append(i)
        if not still:
            break
        keep = torch.tensor(still)
        # rows of the flat (n * k) batch that the surviving beams continue from
        index = (keep[:, None] * k + new_beams[keep]).view(-1).to(device)
        step_tokens = new_tokens[keep].view(-1, 1).to(device)
        generated = torch.cat([generated.index_select(0, index), step_tokens], dim=1)
        cache.reorder(index)
        if hasattr(decoder, "reorder"):
            decoder.reorder(index)
        scores = new_scores[keep.to(device)]
        active = [active[i] for i in still]
        if t == max_new_tokens:
            break
        logits = decoder.step(step_tokens, cache)[:, -1].float()
    for i, prompt_index in enumerate(active):
        if results[prompt_index] is not None:
            continue
        done = finished[prompt_index]
        if not done:  # nothing ended in time: the live beams are the answers
            done = [
                Hypothesis(seq, s, s / length_penalty(len(seq), alpha))
                for seq, s in zip(generated[i * k : (i + 1) * k].tolist(), scores[i].tolist(), strict=True)
                if s != float("-inf")
            ]
        results[prompt_index] = sorted(done, key=lambda h: h.score, reverse=True)[:k]
    return results
