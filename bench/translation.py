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
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

SENTENCE = "A young woman in a red jacket is walking her small brown dog along a busy street in the city."
TARGET_P95_MS = 300.0


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

    from bench.common import hardware, latencies_ms, latency_stats, print_latency_table
    from demos.translation import translate
    from models.checkpoint import load_model
    from models.tokenizers import load_tokenizer
    from models.translation import encode_source, language_id, translate_ids

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.checkpoint), load_tokenizer(args.checkpoint)
    source = encode_source(tokenizer, SENTENCE, model.config.max_len).ids
    start = language_id(tokenizer, "de")
    output = translate_ids(model, [source], start, args.beam)[0]
    stats = latency_stats(
        {
            "beam search": latencies_ms(lambda: translate_ids(model, [source], start, args.beam), args.runs, 3),
            "translate() + attention map": latencies_ms(
                lambda: translate(SENTENCE, "en", "de", args.beam), args.runs, 3
            ),
        }
    )
    print_latency_table(
        f"{len(SENTENCE.split())} words -> {len(source)} source tokens, {len(output)} target tokens, beam {args.beam}",
        stats,
    )
    full = stats["translate() + attention map"]
    result = {
        "bench": "translation",
        "words": len(SENTENCE.split()),
        "beam": args.beam,
        "threads": args.threads,
        "runs": args.runs,
        "latency": stats,
        "p50_ms": full["p50_ms"],
        "p95_ms": full["p95_ms"],
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": full["p95_ms"] <= TARGET_P95_MS,
        "hardware": hardware(args.threads),  # includes the load average: busy machines skew the tail
        "date": date.today().isoformat(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
