"""What every task's training shares: configs from YAML, data location, optimizer and schedule,
a wall-clock log of validation metrics. No Gradio here (the GPU image has none)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from models.schedules import warmup_cosine

TASKS = ("generation", "translation", "vision", "audio")


@dataclass
class TrainingConfig:
    """Fields every task has; each task subclasses it and adds its own (model size, data, ...)."""

    model: dict[str, Any] = field(default_factory=dict)  # the model config dataclass's fields
    seed: int = 1337
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    max_steps: int = 1000
    max_time_s: float | None = None  # stop after this much training time (Lightning's max_time)
    grad_clip: float = 1.0
    precision: str = "32-true"  # "bf16-mixed" on the GPU
    compile: bool = False
    val_every: int = 250  # steps between validations
    label_smoothing: float = 0.0


def load_config(config_cls: type, path: str | Path | None, overrides: list[str] = ()):
    """YAML file + `key=value` overrides (values parsed as YAML) -> config dataclass."""
    values = yaml.safe_load(Path(path).read_text()) if path else {}
    for item in overrides:
        key, _, raw = item.partition("=")
        target = values
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = yaml.safe_load(raw)
    known = {f.name for f in fields(config_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys for {config_cls.__name__}: {sorted(unknown)}")
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return config_cls(**values)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """--data-dir, else $PLAYGROUND_DATA, else None (the task then downloads the public source)."""
    data_dir = data_dir or os.environ.get("PLAYGROUND_DATA")
    return Path(data_dir) if data_dir else None


def download_cache() -> Path:
    """Where public datasets land when no --data-dir holds them."""
    return Path(os.environ.get("PLAYGROUND_CACHE", Path.home() / ".cache" / "transformer-playground"))


def download(url: str, dest: Path) -> Path:
    """Fetch `url` to `dest` once (users have internet; tests never get here)."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url}")
        tmp = dest.with_suffix(dest.suffix + ".part")
        urllib.request.urlretrieve(url, tmp)
        tmp.rename(dest)
    return dest


def configure_adamw(module: L.LightningModule, config: TrainingConfig, total_steps: int | None = None):
    """AdamW with decay on matrices only (not biases and norms), and a per-step warmup + cosine
    schedule over max_steps or max_time_s, whichever runs out first. Returns what
    `configure_optimizers` returns."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.cuda.is_available()  # one kernel for the whole update on the GPU
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)
    total = total_steps or config.max_steps
    start = time.monotonic()

    def multiplier(step: int) -> float:
        if config.max_time_s and step >= config.warmup_steps:
            # the cosine ends when the time budget does, if that comes before `total`: on a shared
            # or slower machine the step time is not known in advance, and the run must still end
            # with a low learning rate
            by_time = int(total * min(1.0, (time.monotonic() - start) / config.max_time_s))
            step = max(step, by_time)
        return warmup_cosine(step, config.warmup_steps, total, config.min_lr_ratio)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def process_start_time() -> float:
    """When this process started (Linux /proc), so "time to target" includes imports and compile."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return time.time()


class WallClockLog(L.Callback):
    """After each validation, append {step, wall_s, metrics...} to a JSON-lines log, and remember
    the first wall time at which `target_metric` reached `target_value` (lower is better)."""

    def __init__(self, path: Path, target_metric: str | None = None, target_value: float | None = None):
        self.path, self.target_metric, self.target_value = Path(path), target_metric, target_value
        self.start = process_start_time()
        self.reached_at: float | None = None
        self.history: list[dict] = []

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        row = {"step": trainer.global_step, "wall_s": round(time.time() - self.start, 2), **metrics}
        self.history.append(row)
        value = metrics.get(self.target_metric) if self.target_metric else None
        if value is not None and self.reached_at is None and value <= self.target_value:
            self.reached_at = row["wall_s"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
