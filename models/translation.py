"""Translation with one EncoderDecoder for several directions: vocabulary, routing, decoding to text.

The target language is chosen by the decoder's first token (<2de>, <2en>, <2fr>): it takes the
place of BOS, so a single model serves every direction, and the encoder reads a source without
being told what it will become. Source and target share one subword vocabulary (and, in
EncoderDecoder, one embedding matrix). Pure PyTorch + `tokenizers`; training and the tab use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from models.decoding import beam_search_batch
from models.transformer import EncoderDecoder

LANGUAGES = {"en": "English", "de": "German", "fr": "French"}
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"] + [f"<2{lang}>" for lang in LANGUAGES]
LENGTH_PENALTY = 0.6  # GNMT's alpha for beam search


def language_token(lang: str) -> str:
    """The decoder's first token for output in `lang` ("de" -> "<2de>")."""
    return f"<2{lang}>"


def language_id(tokenizer: Tokenizer, lang: str) -> int:
    token_id = tokenizer.token_to_id(language_token(lang))
    if token_id is None:
        raise ValueError(f"the vocabulary has no {language_token(lang)}: this model cannot translate into {lang!r}")
    return token_id


def train_tokenizer(texts: Iterable[str], vocab_size: int, kind: str = "bpe") -> Tokenizer:
    """A shared subword vocabulary (BPE or Unigram) that keeps case.

    NFKC folds look-alike Unicode forms; Metaspace marks word starts with "▁" and its decoder turns
    them back into spaces, so decode(encode(s)) == s for ordinary text (no detokenizer needed).
    Characters never seen in training become <unk> (ids are fixed: pad 0, <s> 1, </s> 2, <unk> 3).
    """
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r} (bpe or unigram)")
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


@dataclass
class Source:
    """A text as the encoder reads it, and what was left out on the way (`encode_source`)."""

    ids: list[int]  # the known pieces, at most max_len - 1 of them, then </s>
    unknown: list[str]  # the text's characters outside the vocabulary, left out (each once, in order)
    n_pieces: int  # known pieces in the whole text, before any cut
    end: int  # character offset in the text where the last piece kept ends

    @property
    def truncated(self) -> bool:
        return self.n_pieces > len(self.ids) - 1


def encode_source(tokenizer: Tokenizer, text: str, max_len: int) -> Source:
    """The one way a source text becomes encoder input, for evaluation and the tab alike: its
    pieces without <unk> (a character never seen in training carries no meaning the model could
    use), cut to max_len - 1 pieces, then </s>."""
    encoding = tokenizer.encode(text)
    pieces = list(zip(encoding.ids, encoding.offsets, strict=True))
    unknown = list(dict.fromkeys(text[a:b] for i, (a, b) in pieces if i == UNK_ID))
    known = [(i, end) for i, (_, end) in pieces if i != UNK_ID]
    kept = known[: max_len - 1]
    return Source([i for i, _ in kept] + [EOS_ID], unknown, len(known), kept[-1][1] if kept else 0)


def max_output_len(model: EncoderDecoder, source_len: int) -> int:
    """Room for the translation: about twice the source, within the model's trained length."""
    return min(model.config.max_len - 1, 2 * source_len + 10)


@torch.no_grad()
def translate_ids(
    model: EncoderDecoder,
    sources: list[list[int]],
    target_id: int,
    beam_size: int = 4,
    batch_size: int = 64,
) -> list[list[int]]:
    """Beam-search translations (ids, without the language token and </s>) of many sources.

    Sources are batched by length so little of each batch is padding; the order is kept.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        longest = max(len(sources[i]) for i in chunk)
        src = torch.full((len(chunk), longest), PAD_ID, dtype=torch.long)
        for row, i in enumerate(chunk):
            src[row, : len(sources[i])] = torch.tensor(sources[i])
        memory, mask, _ = model.encode(src.to(device))
        prompts = torch.full((len(chunk), 1), target_id, dtype=torch.long, device=device)
        hypotheses = beam_search_batch(
            model.target_decoder(memory, mask),
            prompts,
            beam_size,
            max_output_len(model, longest),
            EOS_ID,
            LENGTH_PENALTY,
        )
        for i, hyps in zip(chunk, hypotheses, strict=True):
            outputs[i] = hyps[0].tokens
    return outputs


def translate_texts(
    model: EncoderDecoder, tokenizer: Tokenizer, texts: list[str], target: str, beam_size: int = 4, batch_size: int = 64
) -> list[str]:
    """Detokenized translations of `texts` into language `target` ("en", "de", "fr")."""
    sources = [encode_source(tokenizer, text, model.config.max_len).ids for text in texts]
    ids = translate_ids(model, sources, language_id(tokenizer, target), beam_size, batch_size)
    return tokenizer.decode_batch(ids, skip_special_tokens=True)
