"""Generate-tab speed with the shipped model on this machine's CPU: tokens per second for 500 new
tokens with and without the KV cache (target: cached >= 3x uncached) and time to first token
(target <= 100 ms), measured through `demos.generation.generate`, the function the tab streams.

    python -m bench.generation                 # 2 threads, 500 tokens, median of 3 runs
    python -m bench.generation --threads 1 --tokens 200 --repeats 5

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections import deque
from datetime import date

import torch

from demos.common import checkpoint_dir, get_model
from demos.generation import EXAMPLES, generate

PROMPT = EXAMPLES[0][0]


def run_once(prompt: str, tokens: int, use_cache: bool, seed: int) -> tuple[float, float]:
    """(tokens/s over the whole call, time to first token in ms) for one generation."""
    last = deque(generate(prompt, tokens, temperature=0.8, seed=seed, use_cache=use_cache), maxlen=1)[0]
    return last.tokens_per_s, last.first_token_ms


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a Space has 2 cores)")
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = get_model("generation")
    long_prompt = ("".join(tokenizer.chars) * 10)[: model.context_len]  # fills the whole context

    for use_cache in (True, False):  # warm up both paths (allocator, first-call overheads)
        run_once(PROMPT, 20, use_cache, seed=0)
    runs = {
        use_cache: [run_once(PROMPT, args.tokens, use_cache, seed=i) for i in range(args.repeats)]
        for use_cache in (True, False)
    }
    cached = statistics.median(r[0] for r in runs[True])
    uncached = statistics.median(r[0] for r in runs[False])
    first_ms = statistics.median(r[1] for r in runs[True])
    first_ms_full = statistics.median(run_once(long_prompt, 1, True, seed=i)[1] for i in range(args.repeats))

    result = {
        "bench": "generation",
        "new_tokens": args.tokens,
        "threads": args.threads,
        "cached_tokens_per_s": round(cached, 1),
        "uncached_tokens_per_s": round(uncached, 1),
        "cache_speedup": round(cached / uncached, 2),
        "first_token_ms": round(first_ms, 1),
        "first_token_ms_full_context": round(first_ms_full, 1),
        "prompt_chars": len(PROMPT),
        "context_len": model.context_len,
        "targets": {"cache_speedup": ">= 3", "first_token_ms": "<= 100"},
        "checkpoint": str(checkpoint_dir("generation")),
        "hardware": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
        "load_avg_1min": round(os.getloadavg()[0], 2),  # other processes on the cores skew every figure
        "date": date.today().isoformat(),
    }
    rows = [
        ("tokens/s, KV cache on", f"{cached:.1f}"),
        ("tokens/s, KV cache off", f"{uncached:.1f}"),
        ("speedup (target >= 3x)", f"{cached / uncached:.2f}x"),
        (f"first token, {len(PROMPT)}-char prompt (target <= 100 ms)", f"{first_ms:.1f} ms"),
        (f"first token, {model.context_len}-char prompt", f"{first_ms_full:.1f} ms"),
    ]
    print(
        f"Generation, {args.tokens} new tokens, {args.threads} threads, median of {args.repeats}, "
        f"load average {result['load_avg_1min']}"
    )
    for name, value in rows:
        print(f"  {name:<45} {value:>12}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
