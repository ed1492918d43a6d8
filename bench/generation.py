"""Decoding speed on this machine's CPU, in two parts:

1. The Generate tab with the shipped model, through `demos.generation.generate` (the function the
   tab streams): tokens/s for 500 new tokens with the KV cache on and off, time to first token.
2. A race at nanoGPT's shakespeare_char size (6 layers, 6 heads, 384 wide, context 256, random
   weights): our GPT with its KV cache, and without it, against a nanoGPT-style model and its
   `generate` loop (no cache, crop to the block, full forward per token; bench/nanogpt_style.py).
   Target: cached >= 10x the baseline's tokens/s.
   "Ours" is served as the Generate tab serves its model: the weight matrices stay in float16,
   as checkpoints ship them, and are upcast for each product (models.checkpoint.Float16Linear),
   so the math is float32; each cached token runs models.fast_decoding's one-token step. The race
   also runs the same model stepping through its modules, and with float32 matrices (all hold
   the same numbers and write the same tokens, which the bench checks), and times the ceiling of
   each kind of matrix: a cached token must read every matrix once (42.6 MB in float32 at this
   size), so timing those products alone bounds any decoder on this machine's memory system.

Runs are interleaved (one of each per round, median over the rounds) so that other processes on
the shared machine slow every contender alike; the load average is printed before and after.

    python -m bench.generation                          # 2 threads, 500 tokens, 3 rounds
    python -m bench.generation --threads 1 --tokens 200 --rounds 5
    python -m bench.generation --skip-tab               # only the nanoGPT-size race

Prints a table, then one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the app runs; spinning threads thrash a busy machine

import argparse  # noqa: E402
import copy  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import date  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bench.common import report  # noqa: E402
from bench.nanogpt_style import BaselineConfig, BaselineGPT  # noqa: E402
from models.checkpoint import Float16Linear, keep_linears_in_float16  # noqa: E402
from models.decoding import sample  # noqa: E402
from models.fast_decoding import FastDecoder  # noqa: E402
from models.transformer import GPT, GPTConfig  # noqa: E402

PROMPT = "ROMEO:\nBut soft, what light"  # the Generate tab's first example
NANOGPT = {"vocab_size": 65, "context_len": 256, "n_layers": 6, "n_heads": 6, "d_model": 384, "d_ff": 1536}

BASELINE = "nanoGPT-style generate (no cache)"
SERVED = "ours, KV cache (float16-kept, fast step)"
MODULES = "ours, KV cache, step through the modules"
FLOAT32 = "ours, KV cache, float32 matrices"
UNCACHED = "ours, no cache"

Run = Callable[[], tuple[float, float]]  # () -> (tokens/s over the whole call, first token ms)


def race(contenders: dict[str, Run], rounds: int) -> dict[str, dict[str, float]]:
    """Median tokens/s and first-token ms of each contender, run in turn once per round."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())
    return {
        name: {
            "tokens_per_s": round(statistics.median(r[0] for r in runs), 1),
            "first_token_ms": round(statistics.median(r[1] for r in runs), 1),
            "runs_tokens_per_s": [round(r[0], 1) for r in runs],
        }
        for name, runs in results.items()
    }


def timed_steps(steps, n: int, start: float) -> tuple[float, float]:
    """Consume an iterator of n new tokens: (tokens/s, ms until the first one), timed from `start`."""
    first = None
    for _ in steps:
        first = first if first is not None else time.perf_counter() - start
    return n / (time.perf_counter() - start), 1000 * first


def ours(model: GPT, prompt: torch.Tensor, tokens: int, use_cache: bool, fast: bool = True) -> Run:
    """Our sampling loop; `fast`: through FastDecoder, built per call as the Generate tab does."""

    def run() -> tuple[float, float]:
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        decoder = FastDecoder(model) if fast else model
        steps = sample(decoder, prompt, tokens, 1.0, use_cache=use_cache, generator=generator)
        return timed_steps(steps, tokens, start)

    return run


def baseline(model: BaselineGPT, prompt: torch.Tensor, tokens: int) -> Run:
    def run() -> tuple[float, float]:
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        model.generate(prompt, 1, generator=generator)
        first_ms = 1000 * (time.perf_counter() - start)
        start = time.perf_counter()
        model.generate(prompt, tokens, generator=generator)
        return tokens / (time.perf_counter() - start), first_ms

    return run


def weight_reading_ceiling(model: GPT, repeats: int = 50) -> dict:
    """Tokens/s if a one-token step cost only its matrix products: every linear layer applied once
    to a single row, in order, on one thread (as the cached steps run); median over `repeats`."""
    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Float16Linear))]
    rows = {m.in_features: torch.randn(1, m.in_features) for m in linears}
    times, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(repeats + 5):  # the first 5 warm up
            start = time.perf_counter()
            for linear in linears:
                linear(rows[linear.in_features])
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    seconds = statistics.median(times[5:])
    megabytes = sum(m.weight.numel() * m.weight.element_size() for m in linears) / 1e6
    return {
        "weights_mb": round(megabytes, 1),
        "ms_per_token": round(1000 * seconds, 3),
        "gb_per_s": round(megabytes / 1000 / seconds, 1),
        "tokens_per_s": round(1 / seconds, 1),
    }


class _CountCalls(TorchDispatchMode):
    """Counts the ATen operations that run inside it (views and copies included)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def aten_calls_per_token(decoder, prompt: torch.Tensor) -> int:
    """How many tensor operations one cached token costs (each has a fixed cost of microseconds)."""
    cache = decoder.new_cache()
    decoder.step(prompt, cache)
    with _CountCalls() as counter:
        decoder.step(prompt[:, -1:], cache)
    return counter.calls


def nanogpt_race(tokens: int, rounds: int) -> dict:
    torch.manual_seed(0)
    full = GPT(GPTConfig(**NANOGPT, dropout=0.0)).eval()
    with torch.no_grad():  # float16 numbers, as a shipped checkpoint holds: both copies compute the same
        for param in full.parameters():
            param.copy_(param.half().float())
    served = keep_linears_in_float16(copy.deepcopy(full))  # what the Generate tab does on load
    base_model = BaselineGPT(BaselineConfig()).eval()
    prompt = torch.randint(0, 65, (1, len(PROMPT)))

    def contenders(n: int) -> dict[str, Run]:
        return {
            BASELINE: baseline(base_model, prompt, n),
            SERVED: ours(served, prompt, n, True),
            MODULES: ours(served, prompt, n, True, fast=False),
            FLOAT32: ours(full, prompt, n, True),
            UNCACHED: ours(served, prompt, n, False),
        }

    for warm_up in contenders(5).values():
        warm_up()  # allocator and first-call overheads
    result = race(contenders(tokens), rounds)
    base = result[BASELINE]["tokens_per_s"]
    written = [
        [int(t) for t in sample(decoder, prompt, 200, 1.0, generator=torch.Generator().manual_seed(0))]
        for decoder in (FastDecoder(served), served, FastDecoder(full), full)
    ]
    ceilings = {name: weight_reading_ceiling(m) for name, m in (("float16_kept", served), ("float32", full))}
    calls = {"fast_step": aten_calls_per_token(FastDecoder(served), prompt)}
    calls["modules"] = aten_calls_per_token(served, prompt)
    return {
        "params_millions": round(base_model.n_params() / 1e6, 2),
        "contenders": result,
        "cached_vs_baseline": round(result[SERVED]["tokens_per_s"] / base, 2),
        "module_step_vs_baseline": round(result[MODULES]["tokens_per_s"] / base, 2),
        "float32_cached_vs_baseline": round(result[FLOAT32]["tokens_per_s"] / base, 2),
        "uncached_vs_baseline": round(result[UNCACHED]["tokens_per_s"] / base, 2),
        "all_cached_ways_same_200_tokens": all(w == written[0] for w in written),
        "aten_calls_per_token": calls,
        "matrix_products_ceiling": {
            name: {**c, "vs_baseline": round(c["tokens_per_s"] / base, 2)} for name, c in ceilings.items()
        },
    }


def tab_race(tokens: int, rounds: int) -> dict:
    from demos.common import checkpoint_dir, get_model
    from demos.generation import generate

    model, tokenizer = get_model("generation")

    def run(prompt: str, n: int, use_cache: bool) -> Run:
        def call() -> tuple[float, float]:
            last = deque(generate(prompt, n, temperature=0.8, seed=0, use_cache=use_cache), maxlen=1)[0]
            return last.tokens_per_s, last.first_token_ms

        return call

    long_prompt = ("".join(tokenizer.chars) * 10)[: model.context_len]  # fills the whole context
    for use_cache in (True, False):
        run(PROMPT, 20, use_cache)()
    result = race({"KV cache": run(PROMPT, tokens, True), "no cache": run(PROMPT, tokens, False)}, rounds)
    full = race({"full context": run(long_prompt, 1, True)}, rounds)["full context"]
    return {
        "checkpoint": os.path.relpath(checkpoint_dir("generation")),
        "context_len": model.context_len,
        "receptive_field": model.receptive_field,
        "contenders": result,
        "cache_speedup": round(result["KV cache"]["tokens_per_s"] / result["no cache"]["tokens_per_s"], 2),
        "first_token_ms_full_context": full["first_token_ms"],
    }


def past_context_loss(data_dir: str, segments: int, length: int = 1024) -> dict:
    """What the sliding window costs: the shipped model's loss on validation characters that have
    at least a receptive field of text before them, read through the sliding window (what
    generation computes) and cropped to the last context_len characters (nanoGPT's way)."""
    import gzip
    from pathlib import Path

    import torch.nn.functional as F

    from demos.common import get_model

    model, tokenizer = get_model("generation")
    text = gzip.decompress((Path(data_dir) / "tinyshakespeare_input.txt.gz").read_bytes()).decode("utf-8")
    ids = torch.tensor(tokenizer.encode(text[int(len(text) * 0.9) :]))  # nanoGPT's validation split
    ctx, first = model.context_len, model.receptive_field - 1
    window_losses, cropped_losses = [], []
    for start in range(0, segments * length, length):
        segment = ids[start : start + length + 1]
        inputs, targets = segment[None, :-1], segment[1:]
        logits = model(inputs).logits[0, first:]  # longer than the context: the sliding window
        window_losses.append(F.cross_entropy(logits, targets[first:], reduction="none"))
        crops = inputs[0].unfold(0, ctx, 1)[first - ctx + 1 :]  # the last ctx characters up to each position
        cropped_losses.append(F.cross_entropy(model(crops).logits[:, -1], targets[first:], reduction="none"))
    return {
        "characters": int(sum(w.numel() for w in window_losses)),
        "sliding_window_loss": round(torch.cat(window_losses).mean().item(), 4),
        "cropped_loss": round(torch.cat(cropped_losses).mean().item(), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a Space has 2 cores)")
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-tab", action="store_true", help="only the nanoGPT-size race")
    p.add_argument("--past-context", metavar="DATA_DIR", help="instead: the loss past the context, window vs crop")
    p.add_argument("--segments", type=int, default=20, help="with --past-context: 1024-character stretches")
    p.add_argument("--json", metavar="PATH", help="also write the result there (bench/results/ keeps the cited runs)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.past_context:
        with torch.inference_mode():
            losses = past_context_loss(args.past_context, args.segments)
        return report({"bench": "generation_past_context", **losses, "date": date.today().isoformat()}, args.json)
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        nanogpt = nanogpt_race(args.tokens, args.rounds)
        tab = None if args.skip_tab else tab_race(args.tokens, args.rounds)
    result = {
        "bench": "generation",
        "new_tokens": args.tokens,
        "threads": args.threads,
        "rounds": args.rounds,
        "prompt_chars": len(PROMPT),
        "nanogpt_size": nanogpt,
        "generate_tab": tab,
        "targets": {"cached_vs_baseline": ">= 10", "generate_tab.cache_speedup": ">= 3", "first_token_ms": "<= 100"},
        "hardware": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
        "date": date.today().isoformat(),
    }
    print(
        f"Generation, {args.tokens} new tokens, {args.threads} threads, median of {args.rounds} interleaved rounds, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(f"  nanoGPT size ({nanogpt['params_millions']}M parameters, random weights):")
    for name, r in nanogpt["contenders"].items():
        print(f"    {name:<40} {r['tokens_per_s']:>8.1f} tok/s   first token {r['first_token_ms']:>7.1f} ms")
    print(f"    cached / baseline (target >= 10x): {nanogpt['cached_vs_baseline']:.2f}x")
    print(f"    step through the modules / baseline: {nanogpt['module_step_vs_baseline']:.2f}x")
    print(f"    float32 matrices / baseline: {nanogpt['float32_cached_vs_baseline']:.2f}x")
    print(f"    every cached way writes the same 200 tokens: {nanogpt['all_cached_ways_same_200_tokens']}")
    calls = nanogpt["aten_calls_per_token"]
    print(f"    tensor operations per cached token: fast step {calls['fast_step']}, modules {calls['modules']}")
    for name, c in nanogpt["matrix_products_ceiling"].items():
        print(
            f"    ceiling, {name}: the matrix products alone ({c['weights_mb']} MB) take {c['ms_per_token']} ms "
            f"({c['gb_per_s']} GB/s): {c['tokens_per_s']} tok/s, {c['vs_baseline']:.2f}x the baseline"
        )
    if tab is not None:
        print(f"  Generate tab, shipped model (context {tab['context_len']}):")
        for name, r in tab["contenders"].items():
            print(f"    {name:<40} {r['tokens_per_s']:>8.1f} tok/s   first token {r['first_token_ms']:>7.1f} ms")
        print(f"    cache speedup (target >= 3x): {tab['cache_speedup']:.2f}x")
        print(f"    first token, {tab['context_len']}-char prompt: {tab['first_token_ms_full_context']:.1f} ms")
    return report(result, args.json)


if __name__ == "__main__":
    main()
