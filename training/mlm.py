"""Masked language modelling: a small BERT (models.bert) fills in blanks in Multi30k captions.

    python -m training.train mlm --config training/configs/mlm-cpu.yaml --data-dir DATA
    python -m training.evaluate mlm --data-dir DATA

Each caption becomes [CLS] pieces [SEP] in a lower-cased WordPiece vocabulary; every training batch
is corrupted afresh by BERT's 80/10/10 rule (so each epoch hides different tokens), and the loss is
cross-entropy on the chosen 15% only. Validation and evaluation mask with a fixed seed, so their
figures compare across runs. AdamW with warmup and cosine (training.common.TimedModule).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader

from models.bert import IGNORE_INDEX, PAD_ID, Bert, BertConfig, mask_tokens, mlm_loss, train_wordpiece
from models.checkpoint import load_model
from models.tokenizers import load_tokenizer
from training.common import TimedModule, TrainingConfig, compiled
from training.translation import TEST_SPLIT, multi30k_dir, read_split

EVAL_SEED = 0  # the masking of the test split: the same blanks for every checkpoint


@dataclass
class Config(TrainingConfig):
    vocab_size: int = 5000  # WordPiece, special tokens included
    languages: list[str] = field(default_factory=lambda: ["en"])  # captions of these languages, mixed
    mask_rate: float = 0.15
    val_limit: int | None = None  # validate on the first N val captions per language (None: all 1,014)


# ----------------------------------------------------------------------------------------------
# Data: one caption per row, [CLS] ... [SEP], padded per batch
# ----------------------------------------------------------------------------------------------


def encode_captions(tokenizer: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """[CLS] pieces [SEP] for each caption; a too long caption keeps its first pieces and its [SEP]."""
    rows = []
    for encoding in tokenizer.encode_batch(texts):
        ids = encoding.ids
        rows.append(ids if len(ids) <= max_len else ids[: max_len - 1] + ids[-1:])
    return rows


def pad_batch(rows: list[list[int]]) -> Tensor:
    """-> (batch, longest) ids, [PAD] after each row."""
    batch = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.tensor(row)
    return batch


class CaptionData(L.LightningDataModule):
    def __init__(self, config: Config, folder: Path, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.config, self.folder, self.tokenizer = config, folder, tokenizer
        self.max_len = config.model.get("max_len", BertConfig.max_len)

    def _rows(self, split: str, limit: int | None = None) -> list[list[int]]:
        texts = [line for lang in self.config.languages for line in read_split(self.folder, split, lang, limit)]
        return encode_captions(self.tokenizer, [t for t in texts if t], self.max_len)

    def setup(self, stage: str | None = None) -> None:
        self.train_rows = self._rows("train")
        self.val_rows = self._rows("val", self.config.val_limit)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_rows, batch_size=self.config.batch_size, shuffle=True, collate_fn=pad_batch, drop_last=True
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_rows, batch_size=256, collate_fn=pad_batch)


# ----------------------------------------------------------------------------------------------
# Model wiring
# ----------------------------------------------------------------------------------------------


class MLMModule(TimedModule):
    def __init__(self, config: Config, tokenizer: Tokenizer) -> None:
        super().__init__(config)
        self.tokenizer = tokenizer
        self.model = Bert(BertConfig(**config.model))
        compiled(self.model.encoder, config, dynamic=True)  # in place; every batch has its own length

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        inputs, labels = mask_tokens(batch, self.model.config.vocab_size, self.config.mask_rate)
        loss = mlm_loss(self.model, inputs, labels)
        self.log_training(loss)  # no count of the masked tokens: the host would wait for the GPU
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        generator = torch.Generator(device=batch.device).manual_seed(EVAL_SEED + batch_idx)
        inputs, labels = mask_tokens(batch, self.model.config.vocab_size, self.config.mask_rate, generator)
        chosen = labels != IGNORE_INDEX
        hidden, _ = self.model.encode(inputs)
        logits = self.model.mlm_logits(hidden[chosen]).float()
        n_masked = int(chosen.sum())
        loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
        top1 = (logits.argmax(-1) == labels[chosen]).float().mean()
        self.log_validation(n_masked, loss=loss, top1=top1)


# ----------------------------------------------------------------------------------------------
# The interface training/train.py and training/evaluate.py call
# ----------------------------------------------------------------------------------------------


def build(config: Config, data_dir: Path | None) -> tuple[MLMModule, CaptionData]:
    """WordPiece on the training captions of the chosen languages (or `init_from`'s), then the model."""
    folder = multi30k_dir(data_dir)
    if config.init_from:  # a run that starts from a checkpoint keeps its vocabulary: WordPiece
        tokenizer = load_tokenizer(config.init_from)  # training does not give a token the same id twice
    else:
        texts = [line for lang in config.languages for line in read_split(folder, "train", lang)]
        tokenizer = train_wordpiece(texts, config.vocab_size)
    config.model = {**config.model, "vocab_size": tokenizer.get_vocab_size(), "pad_id": PAD_ID}
    return MLMModule(config, tokenizer), CaptionData(config, folder, tokenizer)


@torch.no_grad()
def masked_accuracy(
    model: Bert, tokenizer: Tokenizer, texts: list[str], seed: int = EVAL_SEED, mask_rate: float = 0.15
) -> dict:
    """Top-1 / top-5 accuracy and cross-entropy at BERT-masked positions of `texts`.

    The whole set is padded and masked in one call with a seeded generator, so the blanks do not
    depend on batch size or device. Every chosen position counts (replaced by [MASK], by a random
    token, or left as it was), as in training.
    """
    device = next(model.parameters()).device
    ids = pad_batch(encode_captions(tokenizer, texts, model.config.max_len))
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = mask_tokens(ids, model.config.vocab_size, mask_rate, generator)
    top1 = top5 = 0
    loss_sum = 0.0
    for start in range(0, len(ids), 256):
        x, y = inputs[start : start + 256].to(device), labels[start : start + 256].to(device)
        chosen = y != IGNORE_INDEX
        hidden, _ = model.encode(x)
        logits = model.mlm_logits(hidden[chosen]).float()
        target = y[chosen]
        best = logits.topk(5, dim=-1).indices
        top1 += int((best[:, 0] == target).sum())
        top5 += int((best == target[:, None]).any(-1).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    n = int((labels != IGNORE_INDEX).sum())
    return {"top1": round(top1 / n, 4), "top5": round(top5 / n, 4), "loss": round(loss_sum / n, 4), "masked": n}


def evaluate(checkpoint: Path, data_dir: Path | None, limit: int | None, device: str) -> dict:
    """Masked-token top-1 / top-5 on test_2016_flickr (1,000 captions per language), seed EVAL_SEED."""
    model, tokenizer = load_model(checkpoint, device), load_tokenizer(checkpoint)
    languages = model.meta.get("config", {}).get("languages", ["en"])
    folder = multi30k_dir(data_dir)
    results = {}
    for lang in languages:
        texts = [t for t in read_split(folder, TEST_SPLIT, lang, limit) if t]
        results[lang] = masked_accuracy(model, tokenizer, texts)
        print(f"{lang}: {results[lang]} on {len(texts)} captions", file=sys.stderr)
    first = results[languages[0]]
    return {**first, "language": languages[0], "per_language": results, "split": TEST_SPLIT, "seed": EVAL_SEED}
