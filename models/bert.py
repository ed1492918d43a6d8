"""Encoder-only, BERT style (Devlin et al. 2019): every token sees every other token, and the model
learns by filling in blanks (masked language modelling, MLM).

- `Bert`: token embedding + learned positions -> the same `Encoder` as the translator's (no causal
  mask, only padding) -> an MLM head (dense, GELU, LayerNorm) whose output matrix is the token
  embedding itself (tied), plus a bias per vocabulary entry.
- `mask_tokens`: BERT's corruption. 15% of the ordinary tokens are chosen; of those 80% become
  [MASK], 10% a random token, 10% stay as they are; the loss is on the chosen positions only.
  Special tokens ([CLS], [SEP], [PAD]) are never chosen.
- `train_wordpiece`, `fill_mask`: the subword vocabulary and the inference the Fill-Mask tab runs.

Pure PyTorch + `tokenizers`; training/mlm.py trains it, demos/fill_mask.py shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor, nn

from models.attention import padding_mask
from models.attention_data import Attention, ModelAttention, stack_layers
from models.hub import HubMixin
from models.positional import build_positional
from models.transformer import Encoder, Output, init_weights

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
IGNORE_INDEX = -100  # label of a position the loss skips (F.cross_entropy's default)


@dataclass
class BertConfig:
    vocab_size: int = 5000
    max_len: int = 64  # [CLS] + tokens + [SEP]; Multi30k captions are ~15 subwords
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 192
    d_ff: int = 768
    dropout: float = 0.1
    positional: str = "learned"  # learned (BERT's) | sinusoidal
    norm_first: bool = True
    pad_id: int = PAD_ID


class Bert(nn.Module, HubMixin):
    """ids -> embeddings + positions -> bidirectional encoder -> MLM logits over the vocabulary."""

    architecture = "bert"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.positional = build_positional(c.positional, c.d_model, c.max_len)
        self.embed_norm = nn.LayerNorm(c.d_model)  # BERT normalises the summed embeddings
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.n_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, "gelu")
        # the MLM head: a transform, then scores against every token's (input) embedding
        self.head_dense = nn.Linear(c.d_model, c.d_model)
        self.head_norm = nn.LayerNorm(c.d_model)
        self.head_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.apply(init_weights)

    @property
    def context_len(self) -> int:
        return self.config.max_len

    def encode(self, ids: Tensor, need_weights: bool = False) -> tuple[Tensor, list[dict]]:
        """ids (batch, T) -> hidden states (batch, T, d_model) and per-layer {"self": weights}."""
        x = self.embed(ids)
        if self.positional is not None:
            x = self.positional(x)
        x = self.dropout(self.embed_norm(x))
        mask = padding_mask(ids != self.config.pad_id)  # no causal mask: both directions are visible
        return self.encoder(x, mask, need_weights)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Hidden states (..., d_model) -> scores over the vocabulary (..., vocab), tied to `embed`."""
        h = self.head_norm(F.gelu(self.head_dense(hidden)))
        return F.linear(h, self.embed.weight, self.head_bias)

    def forward(self, ids: Tensor, need_weights: bool = False) -> Output:
        hidden, attentions = self.encode(ids, need_weights)
        return Output(self.mlm_logits(hidden), attentions if need_weights else None)

    @torch.no_grad()
    def attention(self, ids: Tensor, labels: list[str]) -> ModelAttention:
        """One sequence (1, T) with a name per token -> MLM logits and its "encoder self" attention
        (every token attends to every token, both ways; only [PAD] is hidden)."""
        out = self(ids, need_weights=True)
        weights = stack_layers(out.attentions, "self")
        return ModelAttention(out.logits, {"encoder self": Attention("encoder self", weights, labels, labels)})


def mlm_loss(model: Bert, inputs: Tensor, labels: Tensor, select: bool | None = None) -> Tensor:
    """Mean cross-entropy over the chosen positions only (labels != IGNORE_INDEX).

    With `select` (the default on a CPU) the vocabulary projection runs on those positions alone:
    ~15% of the tokens, most of the head's cost saved. On a GPU that selection has a size only the
    device knows, so the host would wait for it every step; there (select=False) every position
    goes through the head and the others are ignored by the loss: the same number, no wait."""
    hidden, _ = model.encode(inputs)
    if select is None:
        select = hidden.device.type == "cpu"
    if not select:
        logits = model.mlm_logits(hidden)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
    chosen = labels != IGNORE_INDEX
    logits = model.mlm_logits(hidden[chosen])
    return F.cross_entropy(logits.float(), labels[chosen])


def mask_tokens(
    ids: Tensor,
    vocab_size: int,
    rate: float = 0.15,
    generator: torch.Generator | None = None,
    n_special: int = len(SPECIAL_TOKENS),
) -> tuple[Tensor, Tensor]:
    """BERT's 80/10/10 corruption of a batch of ids (batch, T).

    Returns (inputs, labels): labels hold the original id at the chosen positions and IGNORE_INDEX
    elsewhere. Ids below `n_special` ([PAD], [UNK], [CLS], [SEP], [MASK]) are never chosen; random
    replacements are ordinary tokens. Keeping 10% unchanged stops the model from learning that only
    [MASK] positions matter, and the random 10% makes it check every token it sees.
    """

    def uniform() -> Tensor:
        return torch.rand(ids.shape, generator=generator, device=ids.device)

    eligible = ids >= n_special
    chosen = eligible & (uniform() < rate)
    roll = uniform()
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(n_special, vocab_size, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(to_mask, torch.full_like(ids, MASK_ID), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A lower-cased WordPiece vocabulary (BERT-uncased's recipe, accents kept for German and French).

    Encoding adds [CLS] ... [SEP]; "[MASK]" typed in a sentence is read as the mask token. Ids are
    fixed: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4.
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)]
    )
    return tokenizer


# ----------------------------------------------------------------------------------------------
# Inference: fill in the blanks
# ----------------------------------------------------------------------------------------------


class Blank(NamedTuple):
    """One [MASK] of the input: its position among the tokens and the top candidates."""

    position: int
    candidates: list[tuple[str, float]]  # (token, probability), most likely first


class FillResult(NamedTuple):
    tokens: list[str]  # the input pieces the model read, [CLS] and [SEP] included
    blanks: list[Blank]
    filled: str  # the sentence with each blank replaced by its most likely token


@torch.no_grad()
def fill_mask(model: Bert, tokenizer: Tokenizer, text: str, top_k: int = 5) -> FillResult:
    """Every [MASK] in `text` predicted at once, each from the whole sentence around it (BERT fills
    blanks independently: two blanks do not see each other's answer). The caller checks the input
    (at least one [MASK], some context, at most the model's length)."""
    encoding = tokenizer.encode(text)
    ids = torch.tensor([encoding.ids])
    probs = model(ids).logits[0].softmax(-1)
    probs[:, : len(SPECIAL_TOKENS)] = 0.0  # a blank is filled with a word piece, not a marker
    blanks = []
    for position in (ids[0] == MASK_ID).nonzero().flatten().tolist():
        values, indices = probs[position].topk(top_k)
        pairs = zip(indices.tolist(), values.tolist(), strict=True)
        blanks.append(Blank(position, [(tokenizer.id_to_token(i), round(v, 4)) for i, v in pairs]))
    return FillResult(encoding.tokens, blanks, insert_best(text, blanks))


def insert_best(text: str, blanks: list[Blank]) -> str:
    """`text` with each "[MASK]" replaced by its blank's best piece, the rest as written (case kept);
    a word-inner piece ("##ing") joins the word before it."""
    parts = text.split("[MASK]")
    if len(parts) != len(blanks) + 1:  # the tokenizer saw the blanks differently: fall back to pieces
        return " ".join(b.candidates[0][0] for b in blanks)
    out = parts[0]
    for blank, part in zip(blanks, parts[1:], strict=True):
        piece = blank.candidates[0][0]
        out = out.rstrip() + piece[2:] if piece.startswith("##") else out + piece
        out += part
    return out
