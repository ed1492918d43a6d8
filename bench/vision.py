"""Image-tab latency per image with the shipped ViT on this machine's CPU (target: p95 <= 50 ms):
the model's forward pass with and without attention maps, and the tab's whole function
`demos.vision.classify_image` on a 1024x768 JPEG file (decode, crop, resize, forward with maps,
rollout).

    python -m bench.vision                      # 2 threads, 200 calls each
    python -m bench.vision --threads 1 --repeats 500
    python -m bench.vision --config training/configs/vision-gpu.yaml   # a recipe's model, before training it

With --config the timed model is the one that config trains, with random weights (the time does
not depend on them): whether a recipe's model will serve within the target, known before any
GPU time is spent on it.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image

from bench.common import tab_latency
from demos.common import checkpoint_dir, get_model
from demos.example_pictures import draw_examples
from demos.vision import classify_image
from models.vision import preprocess


def untrained_checkpoint(config_path: str, checkpoints: Path) -> Path:
    """A checkpoints folder whose vision/ holds the model `config_path` trains, untrained."""
    from models.checkpoint import save_checkpoint
    from models.vision import VisionClassifier, ViTConfig
    from training.common import load_config
    from training.vision import Config

    config = load_config(Config, config_path)
    save_checkpoint(checkpoints / "vision", VisionClassifier(ViTConfig(**config.model)), {"untrained": config_path})
    return checkpoints


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a Space has 2 cores)")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--config", help="time the model this training config builds (random weights) instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    if args.config:
        os.environ["PLAYGROUND_CHECKPOINTS"] = str(untrained_checkpoint(args.config, folder / "checkpoints"))
    model, _ = get_model("vision")

    photo = folder / "photo.jpg"
    Image.open(draw_examples(folder)[0]).convert("RGB").resize((1024, 768)).save(photo, quality=90)
    x = preprocess(Image.open(photo), model.config)

    return tab_latency(
        "vision",
        model,
        x,
        ("classify_image(1024x768 JPEG), end to end", lambda: classify_image(str(photo))),
        target_p95_ms=50,
        threads=args.threads,
        repeats=args.repeats,
        title=f"Image tab latency per image, {args.threads} threads, {args.repeats} calls each",
        checkpoint=f"untrained model of {args.config}" if args.config else str(checkpoint_dir("vision")),
    )


if __name__ == "__main__":
    main()
