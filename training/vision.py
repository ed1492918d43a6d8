"""Image classification: a ViT (models/vision.py) trained from scratch on CIFAR-10.

    python -m training.train vision --config training/configs/vision-gpu.yaml --data-dir DATA
    python -m training.evaluate vision --data-dir DATA

Data: the JPEG pack in the data dir is decoded once with Pillow and cached as .npy; the whole set
then lives on the training device as uint8 tensors and batches are cut by indexing, so loading
costs nothing per step. Augmentation runs batched on the device (training/image_augment.py), then
timm's Mixup/CutMix with label smoothing. Optional EMA of the weights; the EMA model is the one
validated and exported. With `max_time_s` the run is timed (training.common.TrainingClock): the
cosine follows wall-clock progress, counted from the end of the first (compiling) step, and training
stops when the budget is spent (a GPU recipe is "the best in N minutes").
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.checkpoint import load_model
from models.vision import VisionClassifier, ViTConfig
from training.common import TimedModule, TrainingConfig, compiled, configure_adamw, download_cache
from training.image_augment import BatchAugment

PACK = "cifar10_jpeg_q75.npz"
TARGET = ("val/error", 0.06)  # the target: 94% test accuracy, as a lower-is-better metric


@dataclass
class Config(TrainingConfig):
    val_size: int = 0  # images held out of the training split to validate on; 0 = the test split
    eval_batch_size: int = 1000
    crop_padding: int = 4  # random crop: shift by up to this many pixels
    flip: bool = True
    augment_magnitude: float = 0.0  # TrivialAugment strength in [0, 1]; 0 = off
    augment_prob: float = 1.0  # share of images that get a TrivialAugment op
    mixup_alpha: float = 0.0  # timm Mixup; both alphas 0 = no mixing
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0  # share of batches mixed
    mix_until: float = 1.0  # stop mixing after this share of training (fit clean images at the end)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def load_cifar10(data_dir: Path | None) -> dict[str, np.ndarray]:
    """{train,test}_{images (N, 32, 32, 3) uint8, labels (N,) int64} and label_names.

    From `data_dir/cifar10_jpeg_q75.npz` (decoded once, cached under the download cache), else
    from torchvision's CIFAR-10 download (the public source)."""
    if data_dir is None or not (Path(data_dir) / PACK).exists():
        return _download_cifar10()
    pack = Path(data_dir) / PACK
    stat = pack.stat()
    key = hashlib.sha1(f"{pack.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cache = download_cache() / "cifar10-decoded" / key
    out: dict[str, np.ndarray] = {}
    with np.load(pack) as z:
        out["label_names"] = np.asarray(z["label_names"]).astype(str)
        for split in ("train", "test"):
            out[f"{split}_labels"] = z[f"{split}_labels"].astype(np.int64)
            path = cache / f"{split}_images.npy"
            if not path.exists():
                images = decode_jpegs(z[f"{split}_jpeg"], z[f"{split}_offsets"])
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")  # concurrent runs never see half a file
                np.save(tmp, images)
                tmp.replace(path)
            out[f"{split}_images"] = np.load(path)
    return out


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Concatenated JPEG files -> (N, H, W, 3) uint8. Pillow releases the GIL while decoding,
    so threads scale with cores."""
    from PIL import Image

    def decode(i: int) -> np.ndarray:
        with Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())) as im:
            return np.asarray(im.convert("RGB"))

    n = len(offsets) - 1
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(decode, range(n), chunksize=256)))


def _download_cifar10() -> dict[str, np.ndarray]:
    from torchvision.datasets import CIFAR10

    root = download_cache() / "cifar10-torchvision"
    out: dict[str, np.ndarray] = {}
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(str(root), train=train, download=True)
        out[f"{split}_images"] = np.asarray(ds.data, dtype=np.uint8)
        out[f"{split}_labels"] = np.asarray(ds.targets, dtype=np.int64)
        out["label_names"] = np.asarray(ds.classes)
    return out


def to_tensor_images(images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """(N, H, W, 3) uint8 numpy -> (N, 3, H, W) uint8 tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()


class DeviceBatches:
    """Batches cut from tensors that already sit on the device: an iterable Lightning accepts as a
    dataloader. Shuffled batches drop the remainder (Mixup wants equal, even sizes); with several
    processes each takes every world_size-th index of one shared permutation."""

    def __init__(
        self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ):
        self.images, self.labels, self.batch_size, self.shuffle = images, labels, batch_size, shuffle
        self.rank, self.world_size = rank, world_size

    def _indices(self) -> Tensor:
        n = self.images.size(0)
        if not self.shuffle:
            return torch.arange(n, device=self.images.device)
        return torch.randperm(n, device=self.images.device)[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = self.images.size(0)
        if self.shuffle:
            return (n // self.world_size) // self.batch_size
        return -(-n // self.batch_size)

    def __iter__(self):
        order = self._indices()
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[index], self.labels[index]


class CIFAR10Data(L.LightningDataModule):
    def __init__(self, config: Config, data_dir: Path | None) -> None:
        super().__init__()
        self.config, self.data_dir = config, data_dir
        self.label_names: list[str] = []

    def prepare_data(self) -> None:
        load_cifar10(self.data_dir)  # decode (or download) once, on one process

    def setup(self, stage: str | None = None) -> None:
        data = load_cifar10(self.data_dir)
        self.label_names = [str(n) for n in data["label_names"]]
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = data["train_images"], data["train_labels"]
        if self.config.val_size > 0:  # a fixed held-out slice of the (class-sorted) training set
            order = np.random.default_rng(self.config.seed).permutation(len(labels))
            val, train = order[: self.config.val_size], order[self.config.val_size :]
            val_images, val_labels = images[val], labels[val]
            images, labels = images[train], labels[train]
        else:
            val_images, val_labels = data["test_images"], data["test_labels"]
        self.train_images = to_tensor_images(images, device)
        self.train_labels = torch.from_numpy(labels).to(device)
        self.val_images = to_tensor_images(val_images, device)
        self.val_labels = torch.from_numpy(val_labels).to(device)

    def train_dataloader(self) -> DeviceBatches:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return DeviceBatches(self.train_images, self.train_labels, self.config.batch_size, True, rank, world)

    def val_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self.val_images, self.val_labels, self.config.eval_batch_size, False)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


class VisionModule(TimedModule):
    """Wires VisionClassifier to augmentation, mixing, the loss, the optimizer and the EMA."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        c = config
        self.model = VisionClassifier(ViTConfig(**c.model))
        self.augment = BatchAugment(c.crop_padding, c.flip, c.augment_magnitude, c.augment_prob)
        self.mixup = None
        if c.mixup_alpha > 0 or c.cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=c.mixup_alpha,
                cutmix_alpha=c.cutmix_alpha,
                prob=c.mix_prob,
                label_smoothing=c.label_smoothing,
                num_classes=self.model.config.num_classes,
            )
        self.keep_ema()  # before compiling in place: the EMA copy stays eager
        compiled(self.model.vit, c)
        compiled(self.augment, c)
        self._images_seen = 0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        with torch.autocast(self.device.type, enabled=False):  # pixels stay float32 under bf16-mixed
            x = self.model.normalize(self.augment(images))
        if self.mixup is not None and self.clock.progress(self.global_step) < self.config.mix_until:
            x, targets = self.mixup(x, labels)  # soft targets, label smoothing included
            smoothing = 0.0
        else:
            targets, smoothing = labels, self.config.label_smoothing
        loss = F.cross_entropy(self.model(x).logits.float(), targets, label_smoothing=smoothing)
        self.log_training(loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)  # the EMA
        if self.clock.start is not None:  # images after the first (compiling) step, as the clock
            self._images_seen += batch[0].size(0)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        x = self.model.normalize(images.float() / 255.0)
        logits = self.eval_model(x).logits.float()
        accuracy = (logits.argmax(-1) == labels).float().mean()
        metrics = dict(loss=F.cross_entropy(logits, labels), accuracy=accuracy, error=1.0 - accuracy)
        if self.ema is not None:
            # the trained weights themselves beside their average: did averaging help? `forward`
            # directly, so a model compiled in place runs eager here (no recompile for eval mode)
            raw = self.model.vit.forward(x).float()
            metrics |= dict(
                loss_raw=F.cross_entropy(raw, labels), accuracy_raw=(raw.argmax(-1) == labels).float().mean()
            )
        self.log_validation(labels.size(0), **metrics)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._images_seen:
            images_per_s = self._images_seen * self.trainer.world_size / self.clock.elapsed()
            self.log("train/images_per_s", images_per_s, sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.config, self.clock)  # not the EMA copy's weights


def build(config: Config, data_dir: Path | None) -> tuple[VisionModule, CIFAR10Data]:
    return VisionModule(config), CIFAR10Data(config, data_dir)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(checkpoint: Path, data_dir: Path | None, limit: int | None = None, device: str = "cpu") -> dict:
    """Test-split accuracy, per class, the confusion matrix (rows: true, columns: predicted) and
    throughput. `limit` takes the first N images of a fixed shuffle (the pack is class-sorted)."""
    model = load_model(checkpoint, device)
    data = load_cifar10(data_dir)
    names = model.config.class_names
    if list(data["label_names"]) != list(names):
        raise ValueError(f"the data's classes {list(data['label_names'])} differ from the model's {names}")
    order = np.random.default_rng(0).permutation(len(data["test_labels"]))[:limit]
    images = to_tensor_images(data["test_images"][order], device)
    labels = torch.from_numpy(data["test_labels"][order]).to(device)
    predictions, seconds = [], 0.0
    for start in range(0, len(labels), 500):
        x = model.normalize(images[start : start + 500].float() / 255.0)
        _sync(device)
        t0 = time.perf_counter()
        predictions.append(model(x).logits.argmax(-1))
        _sync(device)
        seconds += time.perf_counter() - t0
    predicted = torch.cat(predictions)
    k = len(names)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k).cpu()
    per_class = confusion.diag() / confusion.sum(1).clamp_min(1)
    return {
        "accuracy": round(float(confusion.diag().sum() / confusion.sum()), 4),
        "per_class": {name: round(float(a), 4) for name, a in zip(names, per_class, strict=True)},
        "confusion": confusion.tolist(),
        "images_per_s": round(len(labels) / max(seconds, 1e-9), 1),
        "n": len(labels),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
