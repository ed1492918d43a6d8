"""Character-level GPT on Tiny Shakespeare (the Generate tab's model).

- Data: the whole text as one token tensor kept on the training device; a training batch is
  `batch_size` random windows of `context_len + 1` characters (inputs and next-character targets),
  cut on the device from random start offsets, as nanoGPT's `get_batch` does. nanoGPT's split:
  the first 90% of characters train, the last 10% validate.
- Validation: the loss on a fixed set of random windows (chosen once with `val_seed`), so every
  estimate during training measures the same thing; `evaluate` scores the full validation split.

    python -m training.train generation --config training/configs/generation-gpu.yaml --data-dir DATA
    python -m training.evaluate generation --data-dir DATA
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from models.checkpoint import load_model
from models.tokenizers import CharTokenizer, load_tokenizer
from models.transformer import GPT, GPTConfig
from training.common import TimedModule, TrainingConfig, compiled, download, download_cache

DATA_FILE = "tinyshakespeare_input.txt.gz"
DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TARGET = ("val/loss", 1.47)  # nanoGPT's shakespeare_char best is 1.4697


@dataclass
class Config(TrainingConfig):
    train_fraction: float = 0.9  # nanoGPT's split, so losses compare with its 1.4697
    val_windows: int = 1024  # the fixed random windows behind every validation estimate
    val_seed: int = 0


def gpt_config(config: Config, vocab_size: int) -> GPTConfig:
    """The YAML's `model:` fields on top of GPTConfig's defaults; the vocabulary sets vocab_size."""
    known = {f.name for f in fields(GPTConfig)}
    unknown = set(config.model) - known
    if unknown:
        raise ValueError(f"unknown GPTConfig fields in config.model: {sorted(unknown)}")
    return GPTConfig(**{**config.model, "vocab_size": vocab_size})


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def load_text(data_dir: Path | None) -> str:
    """Tiny Shakespeare from `data_dir`, else downloaded once from its public source."""
    if data_dir is not None and (Path(data_dir) / DATA_FILE).exists():
        return gzip.decompress((Path(data_dir) / DATA_FILE).read_bytes()).decode("utf-8")
    return download(DATA_URL, download_cache() / "tinyshakespeare_input.txt").read_text(encoding="utf-8")


def split_point(n_chars: int, train_fraction: float = 0.9) -> int:
    """Index of the first validation character (nanoGPT: int(n * 0.9))."""
    return int(n_chars * train_fraction)


class RandomWindows(IterableDataset):
    """An endless stream of batches of random window starts in [0, n_starts)."""

    def __init__(self, n_starts: int, batch_size: int, seed: int) -> None:
        self.n_starts, self.batch_size, self.seed = n_starts, batch_size, seed

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield torch.randint(self.n_starts, (self.batch_size,), generator=generator)


class ShakespeareData(L.LightningDataModule):
    """Batches are window start offsets (tiny to move); the windows are cut on the device from
    one copy of the whole text there, so no text crosses from host to GPU during training."""

    def __init__(self, text: str, config: Config, context_len: int) -> None:
        super().__init__()
        self.tokenizer = CharTokenizer.from_text(text)  # the full text's 65 characters
        self.tokens = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        self.n_train = split_point(len(self.tokens), config.train_fraction)
        self.config, self.context_len = config, context_len
        if min(self.n_train, len(self.tokens) - self.n_train) <= context_len:
            raise ValueError(f"text of {len(text)} characters is too short for windows of {context_len + 1}")
        self._device_tokens: Tensor | None = None

    @property
    def train_tokens(self) -> Tensor:
        return self.tokens[: self.n_train]

    @property
    def val_tokens(self) -> Tensor:
        return self.tokens[self.n_train :]

    def train_dataloader(self) -> DataLoader:
        # each DDP rank draws its own windows
        rank = self.trainer.global_rank if self.trainer is not None else 0
        windows = RandomWindows(self.n_train - self.context_len, self.config.batch_size, self.config.seed + rank)
        return DataLoader(windows, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_offsets(), batch_size=self.config.batch_size)

    def val_offsets(self) -> Tensor:
        """The fixed validation windows' starts (same seed -> same windows in every run)."""
        generator = torch.Generator().manual_seed(self.config.val_seed)
        n_starts = len(self.val_tokens) - self.context_len
        return self.n_train + torch.randint(n_starts, (self.config.val_windows,), generator=generator)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Window starts (B,) -> (inputs, targets), each (B, context_len), on the batch's device."""
        if self._device_tokens is None or self._device_tokens.device != batch.device:
            self._device_tokens = self.tokens.to(batch.device)
        span = torch.arange(self.context_len + 1, device=batch.device)
        windows = self._device_tokens[batch[:, None] + span]
        return windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def next_token_loss(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of every position's prediction of the next character (in float32)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction=reduction)


class GenerationModule(TimedModule):
    """Wires a plain `GPT` to the next-character loss and AdamW; holds the vocabulary to export."""

    def __init__(self, config: Config, vocab: list[str]) -> None:
        super().__init__(config)
        self.tokenizer = CharTokenizer(vocab)
        self.model = GPT(gpt_config(config, len(vocab)))
        # Training runs a compiled forward; validation runs the plain module, which spares a second
        # compile for eval mode.
        self.train_forward = compiled(self.model.forward, config)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        loss = next_token_loss(self.train_forward(inputs).logits, targets)
        self.log_training(loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        loss = next_token_loss(self.model(inputs).logits, targets)
        self.log_validation(inputs.size(0), loss=loss)  # mean over the fixed windows


def build(config: Config, data_dir: Path | None) -> tuple[GenerationModule, ShakespeareData]:
    text = load_text(data_dir)
    context_len = gpt_config(config, 1).context_len
    data = ShakespeareData(text, config, context_len)
    return GenerationModule(config, data.tokenizer.chars), data


# ----------------------------------------------------------------------------------------------
# Evaluation on the full validation split
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(checkpoint: Path, data_dir: Path | None, limit: int | None = None, device: str = "cpu") -> dict:
    """Mean next-character loss over the whole validation split, cut into non-overlapping blocks
    of context_len characters (each block predicts its characters from the block's start, as
    nanoGPT's best checkpoint was scored for comparison). `limit` keeps only the first `limit` blocks."""
    model = load_model(checkpoint, device)
    tokenizer = load_tokenizer(checkpoint)
    text = load_text(data_dir)
    val = torch.tensor(tokenizer.encode(text[split_point(len(text)) :]), dtype=torch.long)
    ctx = model.context_len
    starts = list(range(0, len(val) - 1, ctx))[: max(1, limit) if limit is not None else None]
    full = [s for s in starts if s + ctx < len(val)]
    last = [s for s in starts if s + ctx >= len(val)]  # at most one shorter block at the end
    total, count = 0.0, 0
    for group in [full[i : i + 32] for i in range(0, len(full), 32)] + ([last] if last else []):
        length = min(ctx, len(val) - 1 - group[0])
        windows = torch.stack([val[s : s + length + 1] for s in group]).to(device)
        total += next_token_loss(model(windows[:, :-1]).logits, windows[:, 1:], reduction="sum").item()
        count += windows[:, 1:].numel()
    loss = total / count
    return {"val_loss": round(loss, 4), "bits_per_char": round(loss / math.log(2), 4), "tokens": count}
