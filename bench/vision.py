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
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from demos.common import checkpoint_dir, get_model
from demos.vision import classify_image, draw_examples
from models.vision import preprocess


def latencies_ms(fn: Callable[[], object], repeats: int, warmup: int = 10) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return np.asarray(times)


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
    stats = {
        name: {"p50_ms": round(float(np.percentile(t, 50)), 2), "p95_ms": round(float(np.percentile(t, 95)), 2)}
        for name, t in cases.items()
    }
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
        "hardware": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
        "date": date.today().isoformat(),
    }
    print(f"Image tab latency per image, {args.threads} threads, {args.repeats} calls each")
    print(f"  {'':<45} {'p50 ms':>8} {'p95 ms':>8}")
    for name, s in stats.items():
        print(f"  {name:<45} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
