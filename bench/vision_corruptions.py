"""How the CIFAR-10 ViT holds up on damaged pictures: test accuracy under common corruptions
(Gaussian noise, Gaussian blur, lowered contrast, JPEG compression), each at three severities,
made here from the clean test images (in the spirit of Hendrycks and Dietterich's CIFAR-10-C;
the severity parameters follow theirs for levels 1, 3 and 5).

    python -m bench.vision_corruptions --data-dir DATA                 # all 10,000 test images
    python -m bench.vision_corruptions --data-dir DATA --limit 2000 --json bench/results/x.json

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from datetime import date

import numpy as np
import torch
from PIL import Image, ImageFilter

from bench.common import hardware, report

SEVERITIES = (1, 3, 5)


def gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pixel noise of standard deviation 0.04 / 0.08 / 0.10 (pixels in 0..1)."""
    sigma = {1: 0.04, 3: 0.08, 5: 0.10}[severity]
    return _to_uint8(images / 255.0 + rng.normal(0.0, sigma, images.shape))


def gaussian_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur of radius (standard deviation) 0.4 / 0.7 / 1.0 pixels."""
    radius = {1: 0.4, 3: 0.7, 5: 1.0}[severity]
    return np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(radius))) for x in images])


def contrast(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Each picture pulled towards its own mean colour, keeping 0.75 / 0.4 / 0.15 of its contrast."""
    keep = {1: 0.75, 3: 0.4, 5: 0.15}[severity]
    x = images / 255.0
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((x - mean) * keep + mean)


def jpeg(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Saved and re-read as JPEG at quality 80 / 58 / 40 (the test images are already JPEG q75)."""
    quality = {1: 80, 3: 58, 5: 40}[severity]

    def once(x: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(x).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    return np.stack([once(x) for x in images])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian noise": gaussian_noise,
    "gaussian blur": gaussian_blur,
    "contrast": contrast,
    "jpeg": jpeg,
}


@torch.no_grad()
def accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of a VisionClassifier on (N, H, W, 3) uint8 images."""
    right = 0
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).float() / 255.0
        predicted = model(model.normalize(x)).logits.argmax(-1).numpy()
        right += int((predicted == labels[start : start + batch]).sum())
    return right / len(images)


def main(argv: list[str] | None = None) -> dict:
    from models.checkpoint import load_model
    from training.common import resolve_data_dir
    from training.vision import load_cifar10

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="the packed datasets (default: $PLAYGROUND_DATA)")
    p.add_argument("--checkpoint", default="checkpoints/vision")
    p.add_argument("--limit", type=int, help="the first N test images of a fixed shuffle (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    model = load_model(args.checkpoint).eval()
    data = load_cifar10(resolve_data_dir(args.data_dir))
    order = np.random.default_rng(0).permutation(len(data["test_labels"]))[: args.limit]
    images, labels = data["test_images"][order], data["test_labels"][order]

    clean = accuracy(model, images, labels)
    table: dict[str, dict[str, float]] = {}
    for name, corrupt in CORRUPTIONS.items():
        rng = np.random.default_rng(0)
        table[name] = {str(s): round(accuracy(model, corrupt(images, s, rng), labels), 4) for s in SEVERITIES}
    mean = float(np.mean([a for row in table.values() for a in row.values()]))

    print(f"CIFAR-10 test accuracy under corruptions, {len(labels)} images, {args.checkpoint}")
    print(f"  {'clean':<16} {clean:7.1%}")
    print(f"  {'corruption':<16} " + " ".join(f"{'severity ' + str(s):>11}" for s in SEVERITIES))
    for name, row in table.items():
        print(f"  {name:<16} " + " ".join(f"{row[str(s)]:>11.1%}" for s in SEVERITIES))
    print(f"  {'mean corrupted':<16} {mean:7.1%}")
    result = {
        "clean_accuracy": round(clean, 4),
        "corrupted_accuracy": table,
        "mean_corrupted_accuracy": round(mean, 4),
        "images": len(labels),
        "checkpoint": args.checkpoint,
        "seconds": round(time.time() - start, 1),
        "hardware": hardware(args.threads),
        "date": date.today().isoformat(),
    }
    return report(result, args.json)


if __name__ == "__main__":
    main()
