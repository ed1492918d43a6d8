"""Tokenizers saved next to the weights: characters for generation, subwords for translation."""

from __future__ import annotations

import json
from pathlib import Path


class CharTokenizer:
    """One token per character, with a fixed vocabulary (Tiny Shakespeare has 65)."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        """Token ids; characters outside the vocabulary are dropped (see `unknown`)."""
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, folder: str | Path) -> None:
        Path(folder, "vocab.json").write_text(json.dumps({"chars": self.chars}, ensure_ascii=False) + "\n")


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """What `load_tokenizer` reads back: vocab.json for a CharTokenizer, tokenizer.json for a
    Hugging Face `tokenizers.Tokenizer`."""
    if isinstance(tokenizer, CharTokenizer):
        tokenizer.save(folder)
    else:
        tokenizer.save(str(Path(folder) / "tokenizer.json"))


def load_tokenizer(folder: str | Path):
    """vocab.json -> CharTokenizer; tokenizer.json -> a Hugging Face `tokenizers.Tokenizer`."""
    folder = Path(folder)
    if (folder / "vocab.json").exists():
        return CharTokenizer(json.loads((folder / "vocab.json").read_text())["chars"])
    if (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    raise FileNotFoundError(f"no tokenizer in {folder} (vocab.json or tokenizer.json)")
