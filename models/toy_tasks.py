"""Small tasks that a transformer learns in seconds on one CPU core (the Train tab's data).

Sequence-to-sequence tasks (copy, reverse, sort, add, brackets) make examples of a given length on
the fly. Every example belongs to one split for good: an example is a validation example when the
CRC32 of its source says so, so training never sees one. Lengths come in two ranges: the training
lengths, and longer held-out lengths that no model ever trains on (do they generalise?).

Next-character prediction on a pasted text (`TextTask`) splits the text: the first 90% trains, the
rest validates, and the held-out length is a context twice as long as the training one.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<s>", "</s>")
LETTERS = "abcdefghij"


class Vocab:
    """Characters <-> ids; ids 0-2 are padding, start and end."""

    def __init__(self, chars: str) -> None:
        self.chars = "".join(dict.fromkeys(chars))  # unique, in order
        self.index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        """Up to the first end token; padding and start tokens are dropped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.chars[i - len(SPECIALS)])
        return "".join(out)

    def label(self, i: int) -> str:
        return SPECIALS[i] if i < len(SPECIALS) else self.chars[i - len(SPECIALS)]


@dataclass(frozen=True)
class Example:
    source: str
    target: str


@dataclass(frozen=True)
class Seq2SeqBatch:
    source: Tensor  # (batch, S) ids, PAD after the end
    target_in: Tensor  # (batch, T+1): BOS then the target (what the decoder reads under teacher forcing)
    target_out: Tensor  # (batch, T+1): the target then EOS (what it must predict)
    examples: list[Example]


def is_validation(example: Example) -> bool:
    """One example in five, fixed by its source text: never in the training stream."""
    return zlib.crc32(example.source.encode()) % 5 == 0


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _copy(rng: random.Random, n: int) -> Example:
    s = _letters(rng, n)
    return Example(s, s)


def _reverse(rng: random.Random, n: int) -> Example:
    s = _letters(rng, n)
    return Example(s, s[::-1])


def _sort(rng: random.Random, n: int) -> Example:
    s = _letters(rng, n)
    return Example(s, "".join(sorted(s)))


def _add(rng: random.Random, n: int) -> Example:
    """n = digits of the longer operand; the other has 1 to n digits."""
    a = rng.randrange(10 ** (n - 1) if n > 1 else 0, 10**n)
    m = rng.randint(1, n)
    b = rng.randrange(10 ** (m - 1) if m > 1 else 0, 10**m)
    if rng.random() < 0.5:
        a, b = b, a
    return Example(f"{a}+{b}", str(a + b))


def balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += 1 if c == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def _random_balanced(rng: random.Random, pairs: int) -> str:
    out, opened, closed = [], 0, 0
    while closed < pairs:
        if opened < pairs and (opened == closed or rng.random() < 0.5):
            out.append("(")
            opened += 1
        else:
            out.append(")")
            closed += 1
    return "".join(out)


def _brackets(rng: random.Random, n: int) -> Example:
    """n brackets (even n); half the examples balanced. The unbalanced ones are near misses (two
    brackets swapped or one flipped), so counting '(' against ')' is not enough."""
    n += n % 2
    s = list(_random_balanced(rng, n // 2))
    if rng.random() < 0.5:
        while balanced("".join(s)):
            if rng.random() < 0.5:
                i, j = rng.randrange(n), rng.randrange(n)
                s[i], s[j] = s[j], s[i]
            else:
                i = rng.randrange(n)
                s[i] = "(" if s[i] == ")" else ")"
    text = "".join(s)
    return Example(text, "y" if balanced(text) else "n")


@dataclass(frozen=True)
class Seq2SeqTask:
    """A task of (source, target) strings; `lengths` for training and validation, `heldout` longer."""

    name: str
    description: str
    vocab: Vocab
    make: Callable[[random.Random, int], Example]
    lengths: tuple[int, int]
    heldout: tuple[int, int]
    max_target: int  # the longest target any length of this task can have (decoding stops there)

    def sample(self, rng: random.Random, split: str, length: int | None = None) -> Example:
        """One example of `split` ('train', 'val' or 'heldout'); length drawn from its range."""
        low, high = self.heldout if split == "heldout" else self.lengths
        while True:
            example = self.make(rng, length or rng.randint(low, high))
            if split == "heldout" or is_validation(example) == (split == "val"):
                return example

    def batch(self, rng: random.Random, size: int, split: str, length: int | None = None) -> Seq2SeqBatch:
        return self.collate([self.sample(rng, split, length) for _ in range(size)])

    def collate(self, examples: list[Example]) -> Seq2SeqBatch:
        src = [self.vocab.encode(e.source) for e in examples]
        tgt = [self.vocab.encode(e.target) for e in examples]
        return Seq2SeqBatch(
            source=_pad(src),
            target_in=_pad([[BOS, *t] for t in tgt]),
            target_out=_pad([[*t, EOS] for t in tgt]),
            examples=examples,
        )


def _pad(rows: list[list[int]]) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


SEQ2SEQ_TASKS: dict[str, Seq2SeqTask] = {
    "copy": Seq2SeqTask("copy", "Write the input again: abcd -> abcd.", Vocab(LETTERS), _copy, (2, 8), (9, 16), 16),
    "reverse": Seq2SeqTask(
        "reverse", "Write the input backwards: abcd -> dcba.", Vocab(LETTERS), _reverse, (2, 8), (9, 16), 16
    ),
    "sort": Seq2SeqTask("sort", "Sort the letters: cabd -> abcd.", Vocab(LETTERS), _sort, (2, 8), (9, 16), 16),
    "add": Seq2SeqTask("add", "Add two numbers: 47+385 -> 432.", Vocab("0123456789+"), _add, (1, 3), (4, 5), 6),
    "brackets": Seq2SeqTask(
        "brackets", "Is every bracket closed, in order? (()()) -> y, ())(() -> n.", Vocab("()yn"), _brackets,
        (2, 12), (14, 24), 1,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class TextTask:
    """Next-character prediction on a text: the first 90% trains, the last 10% validates."""

    text: str
    context: int = 32
    name: str = "text"
    description: str = "Predict the next character of your text."

    def __post_init__(self) -> None:
        if len(self.text) < 20 * self.context:
            raise ValueError(
                f"The text is too short: {len(self.text)} characters; paste at least {20 * self.context} "
                f"(the training windows are {self.context} characters and a tenth is kept for validation)."
            )

    @cached_property
    def vocab(self) -> Vocab:
        return Vocab("".join(sorted(set(self.text))))

    @cached_property
    def _splits(self) -> dict[str, Tensor]:
        ids = torch.tensor(self.vocab.encode(self.text), dtype=torch.long)
        cut = int(0.9 * len(ids))
        return {"train": ids[:cut], "val": ids[cut:]}

    @property
    def heldout_context(self) -> int:
        return 2 * self.context

    def ids(self, split: str) -> Tensor:
        """The text of `split` ('train', or 'val' for validation and held-out) as ids."""
        return self._splits["train" if split == "train" else "val"]

    def windows(self, rng: random.Random, size: int, split: str, context: int | None = None) -> tuple[Tensor, Tensor]:
        """(inputs, targets), each (size, context): targets are the inputs shifted by one."""
        data = self.ids(split)
        context = min(context or self.context, len(data) - 1)
        starts = [rng.randrange(len(data) - context) for _ in range(size)]
        x = torch.stack([data[s : s + context] for s in starts])
        y = torch.stack([data[s + 1 : s + 1 + context] for s in starts])
        return x, y
