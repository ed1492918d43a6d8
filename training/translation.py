"""Translation: the original Transformer (encoder-decoder) on Multi30k, one model for four directions.

    python -m training.train translation --config training/configs/translation-gpu.yaml --data-dir DATA
    python -m training.evaluate translation --data-dir DATA [--limit 100]

Each training pair is (source ids + </s>, <2xx> + target ids + </s>) for en->de, de->en, en->fr and
fr->en; batches hold a token budget of similar-length pairs; the loss is label-smoothed
cross-entropy; the optimizer is AdamW with linear warmup and cosine decay (training.common.TimedModule).
With `ema_decay` an exponential moving average of the weights is validated and shipped (averaging
late checkpoints is the classic translation trick: Vaswani et al. averaged the last five).
"""

from __future__ import annotations

import gzip
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from models.checkpoint import load_model
from models.tokenizers import load_tokenizer
from models.transformer import EncoderDecoder, EncoderDecoderConfig
from models.translation import EOS_ID, LANGUAGES, PAD_ID, language_id, train_tokenizer, translate_texts
from training.common import TimedModule, TrainingConfig, compiled, download, download_cache

DIRECTIONS = ("en-de", "de-en", "en-fr", "fr-en")
TEST_SPLIT = "test_2016_flickr"
URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{split}.{lang}.gz"
EVAL_BEAM_SIZE = 4


@dataclass
class Config(TrainingConfig):
    vocab_size: int = 6000  # shared BPE vocabulary of en, de and fr (special tokens included)
    tokenizer: str = "bpe"  # bpe | unigram
    max_tokens: int = 4096  # per batch: rows x the longer padded side (source or target)
    directions: list[str] = field(default_factory=lambda: list(DIRECTIONS))
    label_smoothing: float = 0.1
    val_limit: int | None = None  # validate on the first N val sentences per direction (None: all 1,014)


# ----------------------------------------------------------------------------------------------
# Data: Multi30k files, token-budget batches
# ----------------------------------------------------------------------------------------------


def multi30k_dir(data_dir: Path | None) -> Path:
    """The folder with {split}.{lang}.gz: data_dir/multi30k, data_dir itself, or a download cache."""
    if data_dir is None:
        return download_cache() / "multi30k"
    for folder in (Path(data_dir) / "multi30k", Path(data_dir)):
        if (folder / "train.en.gz").exists() or (folder / f"{TEST_SPLIT}.en.gz").exists():
            return folder
    raise FileNotFoundError(f"no Multi30k files ({{split}}.{{lang}}.gz) in {data_dir} or {data_dir}/multi30k")


def read_split(folder: Path, split: str, lang: str, limit: int | None = None) -> list[str]:
    """One stripped sentence per line (some upstream lines carry stray spaces)."""
    path = folder / f"{split}.{lang}.gz"
    if not path.exists() and folder == download_cache() / "multi30k":
        download(URL.format(split=split, lang=lang), path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return lines[:limit] if limit is not None else lines


def make_pairs(
    tokenizer: Tokenizer, folder: Path, split: str, directions: list[str], max_len: int, limit: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """(source + </s>, <2tgt> + target + </s>) id pairs for every direction; too long pairs are cut."""
    texts = {
        lang: read_split(folder, split, lang, limit)
        for lang in {d[:2] for d in directions} | {d[3:] for d in directions}
    }
    ids = {lang: [e.ids for e in tokenizer.encode_batch(lines)] for lang, lines in texts.items()}
    pairs = []
    for direction in directions:
        src_lang, tgt_lang = direction.split("-")
        start = language_id(tokenizer, tgt_lang)
        for src, tgt in zip(ids[src_lang], ids[tgt_lang], strict=True):
            pairs.append((src[: max_len - 1] + [EOS_ID], [start] + tgt[: max_len - 1] + [EOS_ID]))
    return pairs


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of similar-length examples, each at most `max_tokens` once padded (rows x longest).

    Sorting by length keeps padding small; a random tie-break and shuffled batch order give each
    epoch different batches, so the model never sees a fixed order.
    """

    def __init__(self, lengths: list[int], max_tokens: int, shuffle: bool = True, seed: int = 0) -> None:
        self.lengths = np.asarray(lengths)
        self.max_tokens, self.shuffle, self.seed, self.epoch = max_tokens, shuffle, seed, 0
        self.n_batches = len(self._batches(np.argsort(self.lengths, kind="stable")))

    def _batches(self, order: np.ndarray) -> list[list[int]]:
        batches, current, longest = [], [], 0
        for i in order.tolist():
            length = max(longest, int(self.lengths[i]))
            if current and (len(current) + 1) * length > self.max_tokens:
                batches.append(current)
                current, length = [], int(self.lengths[i])
            current.append(i)
            longest = length
        if current:
            batches.append(current)
        return batches

    def __iter__(self):
        if not self.shuffle:
            yield from self._batches(np.argsort(self.lengths, kind="stable"))
            return
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = np.lexsort((rng.random(len(self.lengths)), self.lengths))  # by length, ties at random
        batches = self._batches(order)
        yield from (batches[i] for i in rng.permutation(len(batches)))

    def __len__(self) -> int:
        return self.n_batches


def collate(pairs: list[tuple[list[int], list[int]]]) -> tuple[Tensor, Tensor, Tensor]:
    """-> source (B, S), decoder input (B, T) starting with <2xx>, labels (B, T): the input shifted left."""
    src_len = max(len(s) for s, _ in pairs)
    tgt_len = max(len(t) for _, t in pairs) - 1
    src = torch.full((len(pairs), src_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((len(pairs), tgt_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((len(pairs), tgt_len), PAD_ID, dtype=torch.long)
    for row, (s, t) in enumerate(pairs):
        src[row, : len(s)] = torch.tensor(s)
        tgt_in[row, : len(t) - 1] = torch.tensor(t[:-1])
        tgt_out[row, : len(t) - 1] = torch.tensor(t[1:])
    return src, tgt_in, tgt_out


def pair_length(pair: tuple[list[int], list[int]]) -> int:
    return max(len(pair[0]), len(pair[1]) - 1)


class Multi30kData(L.LightningDataModule):
    def __init__(self, config: Config, folder: Path, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.config, self.folder, self.tokenizer = config, folder, tokenizer
        self.max_len = config.model.get("max_len", EncoderDecoderConfig.max_len)

    def setup(self, stage: str | None = None) -> None:
        c = self.config
        self.train_pairs = make_pairs(self.tokenizer, self.folder, "train", c.directions, self.max_len)
        self.val_pairs = make_pairs(self.tokenizer, self.folder, "val", c.directions, self.max_len, c.val_limit)

    def _loader(self, pairs, shuffle: bool) -> DataLoader:
        lengths = [pair_length(p) for p in pairs]
        sampler = TokenBatchSampler(lengths, self.config.max_tokens, shuffle, self.config.seed)
        return DataLoader(pairs, batch_sampler=sampler, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_pairs, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_pairs, shuffle=False)


# ----------------------------------------------------------------------------------------------
# Model wiring: label-smoothed loss, optimizer
# ----------------------------------------------------------------------------------------------


class TranslationModule(TimedModule):
    def __init__(self, config: Config, tokenizer: Tokenizer) -> None:
        super().__init__(config)
        self.tokenizer = tokenizer
        self.model = EncoderDecoder(EncoderDecoderConfig(**config.model))
        self.keep_ema()  # averaged weights: what validation sees and export ships, when on
        # compiled with dynamic shapes: every token-budget batch has its own (rows, length)
        self.forward_fn = compiled(self.model.forward, config, dynamic=True)

    def loss(self, batch: tuple[Tensor, Tensor, Tensor], label_smoothing: float, forward=None) -> Tensor:
        """Mean cross-entropy per target token (padding left out)."""
        src, tgt_in, tgt_out = batch
        logits = (forward or self.forward_fn)(src, tgt_in).logits
        return F.cross_entropy(
            logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=PAD_ID, label_smoothing=label_smoothing
        )

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss = self.loss(batch, self.config.label_smoothing)
        # no token count here: counting would make the host wait for the GPU every step, and a
        # step's log needs none (Lightning reads the batch size from the batch's shape)
        self.log_training(loss)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        # plain cross-entropy per target token (no smoothing), so exp(val/loss) is the perplexity;
        # each batch weighs by its tokens in the mean over the validation set
        n_tokens = int((batch[2] != PAD_ID).sum())
        if self.ema is None:
            self.log_validation(n_tokens, loss=self.loss(batch, 0.0))
            return
        loss = self.loss(batch, 0.0, self.ema.module.forward)  # the EMA copy runs eager
        raw_loss = self.loss(batch, 0.0)  # the trained weights themselves: did averaging help?
        self.log_validation(n_tokens, loss=loss, loss_raw=raw_loss)


# ----------------------------------------------------------------------------------------------
# The interface training/train.py and training/evaluate.py call
# ----------------------------------------------------------------------------------------------


def build(config: Config, data_dir: Path | None) -> tuple[TranslationModule, Multi30kData]:
    """Train the shared vocabulary on the training split of all three languages (or take `init_from`'s),
    then the model."""
    folder = multi30k_dir(data_dir)
    if config.init_from:  # a run that starts from a checkpoint keeps its vocabulary and token ids
        tokenizer = load_tokenizer(config.init_from)
    else:
        texts = [line for lang in LANGUAGES for line in read_split(folder, "train", lang)]
        tokenizer = train_tokenizer(texts, config.vocab_size, config.tokenizer)
    config.model = {**config.model, "vocab_size": tokenizer.get_vocab_size(), "pad_id": PAD_ID, "eos_id": EOS_ID}
    return TranslationModule(config, tokenizer), Multi30kData(config, folder, tokenizer)


def evaluate(checkpoint: Path, data_dir: Path | None, limit: int | None, device: str) -> dict:
    """sacreBLEU (cased, on detokenized text, 13a) of beam-search translations of test_2016_flickr."""
    import sacrebleu

    model, tokenizer = load_model(checkpoint, device), load_tokenizer(checkpoint)
    folder = multi30k_dir(data_dir)
    scores, signature = {}, None
    for direction in DIRECTIONS:
        src_lang, tgt_lang = direction.split("-")
        sources = read_split(folder, TEST_SPLIT, src_lang, limit)
        references = read_split(folder, TEST_SPLIT, tgt_lang, limit)
        start = time.time()
        hypotheses = translate_texts(model, tokenizer, sources, tgt_lang, EVAL_BEAM_SIZE)
        bleu = sacrebleu.BLEU()
        scores[direction] = round(bleu.corpus_score(hypotheses, [references]).score, 2)
        signature = str(bleu.get_signature())
        print(
            f"{direction}: BLEU {scores[direction]} on {len(sources)} sentences, {time.time() - start:.0f} s",
            file=sys.stderr,
        )
    return {"bleu": scores, "signature": signature}
