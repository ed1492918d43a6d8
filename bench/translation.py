"""Latency of the Translate tab: a 20-word English sentence into German, beam 4, on 2 CPU threads.

    python bench/translation.py [--checkpoint checkpoints/translation] [--runs 30] [--threads 2]

Times the beam search alone (what a translation costs) and the tab's whole `translate()` (plus
tokenizing and the forward pass that returns the cross-attention map). Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

SENTENCE = "A young woman in a red jacket is walking her small brown dog along a busy street in the city."
TARGET_P95_MS = 300.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn, runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "translation")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam", type=int, default=4)
    args = p.parse_args()
    if args.checkpoint.name != "translation":
        p.error("the tab loads <folder>/translation: pass a checkpoint folder named 'translation'")
    os.environ["PLAYGROUND_CHECKPOINTS"] = str(args.checkpoint.resolve().parent)  # the tab finds <parent>/translation

    import torch

    from demos.translation import translate
    from models.checkpoint import load_model
    from models.tokenizers import load_tokenizer
    from models.translation import encode_source, language_id, translate_ids

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.checkpoint), load_tokenizer(args.checkpoint)
    source, _ = encode_source(tokenizer, SENTENCE, model.config.max_len)
    start = language_id(tokenizer, "de")
    output = translate_ids(model, [source], start, args.beam)[0]
    rows = {
        "beam search": timed(lambda: translate_ids(model, [source], start, args.beam), args.runs),
        "translate() + attention map": timed(lambda: translate(SENTENCE, "en", "de", args.beam), args.runs),
    }
    print(
        f"{len(SENTENCE.split())} words -> {len(source)} source tokens, {len(output)} target tokens, beam {args.beam}"
    )
    print(f"{'what':<30}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for name, times in rows.items():
        print(f"{name:<30}{percentile(times, 50):>10.1f}{percentile(times, 95):>10.1f}{statistics.mean(times):>10.1f}")
    full = rows["translate() + attention map"]
    result = {
        "bench": "translation",
        "words": len(SENTENCE.split()),
        "beam": args.beam,
        "threads": args.threads,
        "runs": args.runs,
        "beam_search_p50_ms": round(percentile(rows["beam search"], 50), 1),
        "beam_search_p95_ms": round(percentile(rows["beam search"], 95), 1),
        "p50_ms": round(percentile(full, 50), 1),
        "p95_ms": round(percentile(full, 95), 1),
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": percentile(full, 95) <= TARGET_P95_MS,
        "hardware": f"CPU ({platform.machine()}, {args.threads} threads)",
        "load_avg_1min": round(os.getloadavg()[0], 2),  # other processes on the machine skew the tail
        "date": date.today().isoformat(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
