"""Image-tab latency per image with the shipped ViT on this machine's CPU (target: p95 <= 50 ms):
the model's forward pass with and without attention maps, and the tab's whole function
`demos.vision.classify_image` on a 1024x768 JPEG file (decode, crop, resize, forward with maps,
rollout).

    python -m bench.vision                      # 2 threads, 200 calls each
    python -m bench.vision --threads 1 --repeats 500

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
from PIL import Image

from bench.common import hardware, latencies_ms, latency_stats, print_latency_table
from demos.common import checkpoint_dir, get_model
from demos.vision import classify_image, draw_examples
from models.vision import preprocess


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a Space has 2 cores)")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = get_model("vision")

    folder = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    photo = folder / "photo.jpg"
    Image.open(draw_examples(folder)[0]).convert("RGB").resize((1024, 768)).save(photo, quality=90)
    x = preprocess(Image.open(photo), model.config)

    def forward(need_weights: bool) -> Callable[[], object]:
        def call():
            with torch.inference_mode():
                return model(x, need_weights=need_weights)

        return call

    cases = {
        "forward, no attention maps": latencies_ms(forward(False), args.repeats),
        "forward + attention maps": latencies_ms(forward(True), args.repeats),
        "classify_image(1024x768 JPEG), end to end": latencies_ms(lambda: classify_image(str(photo)), args.repeats),
    }
    stats = latency_stats(cases)
    end_to_end = stats["classify_image(1024x768 JPEG), end to end"]["p95_ms"]
    result = {
        "bench": "vision",
        "threads": args.threads,
        "repeats": args.repeats,
        "latency": stats,
        "p95_ms_end_to_end": end_to_end,
        "target": {"p95_ms_end_to_end": "<= 50"},
        "meets_target": end_to_end <= 50,
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint": str(checkpoint_dir("vision")),
        "hardware": hardware(args.threads),
        "date": date.today().isoformat(),
    }
    print_latency_table(f"Image tab latency per image, {args.threads} threads, {args.repeats} calls each", stats)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
