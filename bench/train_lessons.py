"""The Train tab's presets, each trained with its lesson and without it (the contrast), on one thread.

    python -m bench.train_lessons [--only SUBSTRING] [--jobs 1] [--json bench/results/train_lessons_cpu.json]

Each preset and its contrast train for the preset's step budget with seed 0 (the same batches),
then print: validation loss, sequence accuracy (greedy decoding; next-character accuracy for
text), accuracy on the longer held-out inputs, confidence against accuracy (ECE), seconds, and
the RNN's figures where the preset trains one beside the transformer. One JSON line at the end.
--jobs N trains N runs at once in separate processes, each on one thread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from demos.train_live import PRESETS  # noqa: E402
from models.live_training import LiveRun  # noqa: E402


def measure(settings, steps: int) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    run = LiveRun(settings)
    run.train_for(1e9, max_steps=steps)
    snap = run.snapshot()
    out = {}
    for name, points in snap.histories.items():
        p, c = points[-1], snap.calibration[name]
        out[name] = {
            "steps": p.step, "train_s": round(p.time_s, 1), "val_loss": round(p.val_loss, 4),
            "val_accuracy": round(p.val_accuracy, 3), "heldout_accuracy": round(p.heldout_accuracy, 3),
            "confidence": round(c["confidence"], 3), "token_accuracy": round(c["accuracy"], 3),
            "ece": round(c["ece"], 4), "sequential_steps": snap.sequential_steps[name],
            "diverged": snap.diverged[name],
        }  # fmt: skip
    out["wall_s"] = round(time.perf_counter() - start, 1)
    return out


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="run only presets whose name contains this")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, in separate processes")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    presets = [preset for preset in PRESETS if args.only.lower() in preset.name.lower()]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            (preset.name, contrast): pool.submit(measure, preset.settings(contrast=contrast), preset.steps)
            for preset in presets
            for contrast in (False, True)
        }
    results = {}
    for preset in presets:
        lesson, contrast = (futures[preset.name, c].result() for c in (False, True))
        results[preset.name] = {"changes": preset.changes, "contrast": preset.contrast, "lesson": lesson,
                                "without_the_lesson": contrast}  # fmt: skip
        print(f"{preset.name} ({preset.steps} steps)")
        for label, r in (("  preset  ", lesson), ("  contrast", contrast)):
            for model, m in r.items():
                if model != "wall_s":
                    print(f"{label} {model:<16} {json.dumps(m)}")
    result = {"presets": results, "load": round(os.getloadavg()[0], 1), "threads": 1, "date": date.today().isoformat()}
    return report(result, args.json)


if __name__ == "__main__":
    main()
