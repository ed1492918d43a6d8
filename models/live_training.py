"""Train a small transformer (and, beside it, an RNN) in short slices, and look at it in between.

Pure PyTorch, no Lightning: the Train tab runs this inside the app, one slice of a second or so
at a time, and shows a `Snapshot` after each. `LiveRun.train_for(seconds)` trains; `snapshot()`
evaluates and collects the curves, attention maps, sample predictions and held-out scores.

The transformer is the project's own: `EncoderDecoder` for the sequence-to-sequence tasks,
`GPT` for next-character prediction; the recurrent models are in models/rnn.py.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DecoderCache, MultiHeadAttention
from models.blocks import DecoderLayer
from models.rnn import RNNConfig, RNNLanguageModel, Seq2SeqRNN
from models.toy_tasks import BOS, EOS, PAD, SEQ2SEQ_TASKS, Seq2SeqBatch, TextTask
from models.transformer import GPT, EncoderDecoder, EncoderDecoderConfig, GPTConfig

TASKS = (*SEQ2SEQ_TASKS, "text")
POSITIONALS = ("none", "sinusoidal", "learned", "rope")
RNNS = ("none", "gru", "lstm", "gru+attention", "lstm+attention")
TRANSFORMER = "transformer"
DECAY_FROM = 100  # steps at the full rate, at least, before the 1/sqrt(step) decay
EVAL_EXAMPLES = 128  # validation and held-out examples scored at every snapshot


@dataclass
class Settings:
    """Every knob of one run. `check()` says in a sentence what is out of range."""

    task: str = "reverse"
    layers: int = 2
    heads: int = 4
    width: int = 64
    positional: str = "sinusoidal"
    scaled: bool = True  # divide Q K^T by sqrt(d_k)
    causal: bool = True  # the decoder's mask on future positions
    norm_first: bool = True  # pre-norm; False is the paper's post-norm
    lr: float = 3e-3
    warmup: int = 100  # steps of linear learning-rate warmup (0: none)
    label_smoothing: float = 0.0
    dropout: float = 0.0
    teacher_forcing: float = 1.0  # chance of reading the true previous token (seq2seq tasks)
    rnn: str = "none"  # a recurrent model trained beside the transformer
    batch_size: int = 32
    seed: int = 0
    text: str = ""

    def check(self) -> None:
        def within(name: str, value: float, low: float, high: float) -> None:
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}; got {value}.")

        if self.task not in TASKS:
            raise ValueError(f"Unknown task {self.task!r}; choose one of {', '.join(TASKS)}.")
        if self.positional not in POSITIONALS:
            raise ValueError(f"Unknown positional encoding {self.positional!r}; choose one of {POSITIONALS}.")
        if self.rnn not in RNNS:
            raise ValueError(f"Unknown recurrent model {self.rnn!r}; choose one of {', '.join(RNNS)}.")
        within("Layers", self.layers, 1, 4)
        within("Heads", self.heads, 1, 8)
        within("Width", self.width, 16, 256)
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(
                f"The width ({self.width}) must split into {self.heads} heads of an even size; "
                f"try a width that is a multiple of {2 * self.heads}."
            )
        within("Learning rate", self.lr, 1e-5, 1.0)
        within("Warmup", self.warmup, 0, 10_000)
        within("Label smoothing", self.label_smoothing, 0.0, 0.5)
        within("Dropout", self.dropout, 0.0, 0.5)
        within("Teacher forcing", self.teacher_forcing, 0.0, 1.0)
        within("Batch size", self.batch_size, 1, 256)
        if self.task == "text":
            if len(self.text) > 100_000:
                raise ValueError(f"The text is too long: {len(self.text)} characters; paste at most 100,000.")
            TextTask(self.text)  # raises when too short


@dataclass
class Point:
    """One evaluation: where a model stood after `step` steps and `time_s` seconds of its own training."""

    step: int
    time_s: float
    train_loss: float
    val_loss: float
    val_accuracy: float  # sequence accuracy with greedy decoding (next-character accuracy for text)
    heldout_accuracy: float  # the same on the longer held-out lengths


@dataclass
class Learner:
    """A model with its optimizer, clock and history."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    time_s: float = 0.0
    diverged: bool = False
    recent_losses: list[float] = field(default_factory=list)
    history: list[Point] = field(default_factory=list)

    @property
    def is_rnn(self) -> bool:
        return isinstance(self.model, (Seq2SeqRNN, RNNLanguageModel))


@dataclass
class Snapshot:
    """What the tab shows after a slice of training (plain data, no plotting)."""

    histories: dict[str, list[Point]]
    attention: dict[str, tuple[np.ndarray, list[str], list[str]]]  # kind -> ((layers, heads, Tq, Tk), q, k)
    samples: list[dict[str, str]]
    heldout_by_length: dict[str, dict[int, float]]
    sequential_steps: dict[str, int]
    calibration: dict[str, dict[str, float]]
    diverged: dict[str, bool]


def xavier_attention(model: nn.Module) -> None:
    """Xavier-initialise every attention projection (the Annotated Transformer's choice): queries
    and keys of unit-variance inputs then have components of variance ~1, the case the paper's
    argument for 1/sqrt(d_k) is about, so switching the factor off shows what it prevents. (Our
    GPT-2-style std 0.02 init starts with scores so small that the missing factor hides at first.)"""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            for linear in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                nn.init.xavier_uniform_(linear.weight)


def set_attention_knobs(model: nn.Module, scaled: bool, causal: bool) -> None:
    """Switch the 1/sqrt(d_k) factor and the decoder's causal mask on or off in a built model."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.scale = None if scaled else 1.0
        if isinstance(module, DecoderLayer):
            module.causal = causal


class LiveRun:
    """One visitor's run: the task, the transformer and optionally an RNN, trained on the same batches."""

    def __init__(self, settings: Settings) -> None:
        settings.check()
        self.settings = s = settings
        self.rng = random.Random(s.seed)
        torch.manual_seed(s.seed)
        self.is_text = s.task == "text"
        self.task = TextTask(s.text) if self.is_text else SEQ2SEQ_TASKS[s.task]
        vocab = len(self.task.vocab)
        if self.is_text:
            model = GPT(
                GPTConfig(vocab, 2 * self.task.context, s.layers, s.heads, s.width, 4 * s.width, s.dropout,
                          s.positional, s.norm_first, bias=True)
            )  # fmt: skip
        else:
            max_len = max(self.task.heldout[1], self.task.max_target) + 2
            model = EncoderDecoder(
                EncoderDecoderConfig(vocab, max_len, s.layers, s.layers, s.heads, s.width, 4 * s.width, s.dropout,
                                     s.positional, s.norm_first, "relu", PAD, BOS, EOS)
            )  # fmt: skip
        xavier_attention(model)
        set_attention_knobs(model, s.scaled, s.causal)
        self.learners = [self._learner(TRANSFORMER, model)]
        if s.rnn != "none":
            cell, _, attention = s.rnn.partition("+")
            config = RNNConfig(vocab, cell, bool(attention), d_model=max(s.width, 64), dropout=s.dropout)
            rnn = RNNLanguageModel(config) if self.is_text else Seq2SeqRNN(config)
            self.learners.append(self._learner(s.rnn.upper().replace("+", " + "), rnn))
        eval_rng = random.Random(s.seed + 1)  # fixed evaluation sets, the same at every snapshot
        if self.is_text:
            self.val = self.task.windows(eval_rng, 64, "val")
            self.heldout = self.task.windows(eval_rng, 64, "val", self.task.heldout_context)
        else:
            self.val = self.task.collate([self.task.sample(eval_rng, "val") for _ in range(EVAL_EXAMPLES)])
            low, high = self.task.heldout
            lengths = [low + i % (high - low + 1) for i in range(EVAL_EXAMPLES)]
            self.heldout = self.task.collate([self.task.sample(eval_rng, "heldout", n) for n in lengths])
            longest = self.task.sample(eval_rng, "val", self.task.lengths[1])
            self.display = self.task.collate([longest])
        self._heldout_guesses: dict[str, list[str]] = {}  # the latest evaluation's, by model

    def _learner(self, name: str, model: nn.Module) -> Learner:
        optimizer = torch.optim.Adam(model.parameters(), lr=self.settings.lr, betas=(0.9, 0.98))
        return Learner(name, model, optimizer)

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """The paper's schedule with its peak at the chosen rate: a linear rise over `warmup` steps,
        then decay as 1/sqrt(step) (a run has no planned end, and a constant rate let reverse, once
        learned, spike and lose it). Without warmup the decay starts at step DECAY_FROM."""
        warmup, t = self.settings.warmup, step + 1
        rise = min(1.0, t / warmup) if warmup else 1.0
        return self.settings.lr * rise * min(1.0, math.sqrt(max(warmup, DECAY_FROM) / t))

    def _logits(self, learner: Learner, batch, teacher_forcing: float) -> tuple[Tensor, Tensor]:
        """(logits, targets) of a batch under (scheduled) teacher forcing."""
        model = learner.model
        if self.is_text:
            x, y = batch
            return model(x).logits, y
        src, tgt_in = batch.source, batch.target_in
        if learner.is_rnn:
            return model(src, tgt_in, teacher_forcing=teacher_forcing).logits, batch.target_out
        if teacher_forcing < 1.0:  # two passes (scheduled sampling for transformers): guess, then mix
            with torch.no_grad():
                guess = model(src, tgt_in).logits.argmax(-1)
            own = torch.rand(tgt_in.shape) >= teacher_forcing
            own[:, 0] = False  # the start token stays
            mixed = torch.where(own & (tgt_in != PAD), torch.cat([tgt_in[:, :1], guess[:, :-1]], 1), tgt_in)
            tgt_in = mixed
        return model(src, tgt_in).logits, batch.target_out

    def _train_batch(self):
        s = self.settings
        if self.is_text:
            return self.task.windows(self.rng, s.batch_size, "train")
        return self.task.batch(self.rng, s.batch_size, "train")

    def train_step(self, learner: Learner, batch) -> None:
        start = time.perf_counter()
        learner.model.train()
        for group in learner.optimizer.param_groups:
            group["lr"] = self.learning_rate(learner.step)
        logits, targets = self._logits(learner, batch, self.settings.teacher_forcing)
        loss = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=PAD, label_smoothing=self.settings.label_smoothing
        )
        learner.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            learner.diverged = True
        else:
            loss.backward()
            learner.optimizer.step()
            learner.recent_losses.append(loss.item())
        learner.step += 1
        learner.time_s += time.perf_counter() - start

    def train_for(self, seconds: float, max_steps: int | None = None) -> None:
        """Train every model that has not diverged, one step each in turn, on the same batches."""
        end = time.perf_counter() + seconds
        steps = 0
        while time.perf_counter() < end and (max_steps is None or steps < max_steps):
            active = [learner for learner in self.learners if not learner.diverged]
            if not active:
                return
            batch = self._train_batch()
            for learner in active:
                self.train_step(learner, batch)
            steps += 1

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def greedy(self, learner: Learner, src: Tensor) -> list[str]:
        """Decode each source greedily, one token at a time, up to the task's longest target."""
        model = learner.model
        model.eval()
        cache = None
        if learner.is_rnn:
            memory, state, mask = model.encode(src)
        else:
            memory, mask, _ = model.encode(src)
            # a KV cache feeds only the newest token; a decoder trained without its causal mask
            # must read its whole output so far again at every step instead
            cache = DecoderCache(len(model.decoder_layers)) if self.settings.causal else None
        tokens = torch.full((src.size(0), 1), BOS, dtype=torch.long)
        step_input = tokens
        for _ in range(self.task.max_target + 1):
            if learner.is_rnn:
                logits, state, _ = model.decode(step_input, state, memory, mask)
            elif cache is not None:
                logits = model.decode(step_input, memory, mask, cache=cache).logits
            else:
                logits = model.decode(tokens, memory, mask).logits
            step_input = logits[:, -1:].argmax(-1)
            tokens = torch.cat([tokens, step_input], dim=1)
            if (tokens == EOS).any(1).all():
                break
        return [self.task.vocab.decode(row[1:]) for row in tokens.tolist()]

    @torch.no_grad()
    def _teacher_forced(self, learner: Learner, batch) -> tuple[float, Tensor, Tensor]:
        """(loss, probabilities at real target positions, whether the top guess is right there)."""
        learner.model.eval()
        logits, targets = self._logits(learner, batch, 1.0)
        real = targets != PAD
        loss = F.cross_entropy(logits[real], targets[real]).item()
        probs = logits[real].softmax(-1)
        return loss, probs, probs.argmax(-1) == targets[real]

    def _accuracy(self, learner: Learner, batch) -> tuple[float, list[str]]:
        if self.is_text:
            _, _, right = self._teacher_forced(learner, batch)
            return right.float().mean().item(), []
        guesses = self.greedy(learner, batch.source)
        right = [g == e.target for g, e in zip(guesses, batch.examples, strict=True)]
        return sum(right) / len(right), guesses

    def evaluate(self, learner: Learner) -> Point:
        val_loss, _, _ = self._teacher_forced(learner, self.val)
        val_acc, _ = self._accuracy(learner, self.val)
        heldout_acc, self._heldout_guesses[learner.name] = self._accuracy(learner, self.heldout)
        train_loss = float(np.mean(learner.recent_losses)) if learner.recent_losses else float("nan")
        learner.recent_losses.clear()
        return Point(learner.step, learner.time_s, train_loss, val_loss, val_acc, heldout_acc)

    def calibration(self, learner: Learner, bins: int = 10) -> dict[str, float]:
        """Mean confidence (top probability) against accuracy on validation tokens, and the expected
        calibration error: the gap between the two averaged over confidence bins (Guo et al. 2017)."""
        _, probs, right = self._teacher_forced(learner, self.val)
        confidence = probs.max(-1).values
        which = (confidence * bins).long().clamp(max=bins - 1)
        ece = 0.0
        for b in range(bins):
            inside = which == b
            if inside.any():
                gap = confidence[inside].mean() - right[inside].float().mean()
                ece += inside.float().mean().item() * abs(gap.item())
        return {"confidence": confidence.mean().item(), "accuracy": right.float().mean().item(), "ece": ece}

    @torch.no_grad()
    def attention_maps(self) -> dict[str, tuple[np.ndarray, list[str], list[str]]]:
        """The transformer's attention on one validation example, every layer and head, by kind."""
        model = self.learners[0].model
        model.eval()
        vocab = self.task.vocab
        if self.is_text:
            x = self.val[0][:1]
            out = model(x, need_weights=True)
            labels = [vocab.label(i) for i in x[0].tolist()]
            return {"self": (torch.cat([a["self"] for a in out.attentions]).numpy(), labels, labels)}
        batch = self.display
        out = model(batch.source, batch.target_in, need_weights=True)
        src = [vocab.label(i) for i in batch.source[0].tolist()]
        tgt = [vocab.label(i) for i in batch.target_in[0].tolist()]
        encoder = [a["encoder_self"] for a in out.attentions if "encoder_self" in a]
        decoder = [a for a in out.attentions if "encoder_self" not in a]
        return {
            "cross": (torch.cat([a["cross"] for a in decoder]).numpy(), tgt, src),
            "encoder self": (torch.cat(encoder).numpy(), src, src),
            "decoder self": (torch.cat([a["self"] for a in decoder]).numpy(), tgt, tgt),
        }

    def rnn_attention(self) -> tuple[np.ndarray, list[str], list[str]] | None:
        """The RNN's attention (decoder steps x source) on the same example, if it has attention."""
        if self.is_text or len(self.learners) < 2 or self.learners[1].model.combine is None:
            return None
        model = self.learners[1].model
        model.eval()
        with torch.no_grad():
            out = model(self.display.source, self.display.target_in, need_weights=True)
        vocab = self.task.vocab
        src = [vocab.label(i) for i in self.display.source[0].tolist()]
        tgt = [vocab.label(i) for i in self.display.target_in[0].tolist()]
        return out.attentions[0]["cross"][0, 0].numpy(), tgt, src

    def sequential_steps(self, learner: Learner) -> int:
        """Steps that must run one after another to train on one example of the longest training length."""
        s = self.settings
        if self.is_text:
            return learner.model.sequential_steps(self.task.context) if learner.is_rnn else s.layers
        source_len, target_len = self.display.source.size(1), self.display.target_in.size(1)
        if learner.is_rnn:
            return learner.model.sequential_steps(source_len, target_len)
        return 2 * s.layers + (s.layers if s.teacher_forcing < 1.0 else 0)  # encoder + decoder (+ a guess pass)

    def heldout_by_length(self, learner: Learner) -> dict[int, float]:
        if self.is_text:
            return {}
        guesses = self._heldout_guesses.get(learner.name) or self.greedy(learner, self.heldout.source)
        by_length: dict[int, list[bool]] = {}
        for guess, example in zip(guesses, self.heldout.examples, strict=True):
            n = len(example.source) if self.settings.task != "add" else max(map(len, example.source.split("+")))
            by_length.setdefault(n, []).append(guess == example.target)
        return {n: sum(v) / len(v) for n, v in sorted(by_length.items())}

    def samples(self, n: int = 6) -> list[dict[str, str]]:
        """The first validation examples with every model's greedy answer (text: a continuation)."""
        if self.is_text:
            return self._text_samples()
        batch: Seq2SeqBatch = self.val
        rows = [{"input": e.source, "target": e.target} for e in batch.examples[:n]]
        for learner in self.learners:
            for row, guess in zip(rows, self.greedy(learner, batch.source[:n]), strict=True):
                row[learner.name] = guess
        return rows

    @torch.no_grad()
    def _text_samples(self, length: int = 60) -> list[dict[str, str]]:
        vocab, context = self.task.vocab, self.task.context
        prompt = self.val[0][:1, : context // 2]
        rows = []
        for learner in self.learners:
            learner.model.eval()
            ids = prompt
            for _ in range(length):  # greedy, cropped to the training context
                logits = learner.model(ids[:, -context:]).logits[:, -1]
                ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            rows.append({"model": learner.name, "prompt": vocab.decode(prompt[0].tolist()),
                         "continuation": vocab.decode(ids[0, prompt.size(1):].tolist())})  # fmt: skip
        return rows

    def snapshot(self) -> Snapshot:
        """Evaluate every model now, add the points to their histories, and collect what the tab shows."""
        for learner in self.learners:
            if not learner.history or learner.history[-1].step != learner.step:
                learner.history.append(self.evaluate(learner))
        rnn_map = self.rnn_attention()
        attention = self.attention_maps()
        if rnn_map is not None:
            attention["RNN cross"] = (rnn_map[0][None, None], rnn_map[1], rnn_map[2])
        return Snapshot(
            histories={lr.name: list(lr.history) for lr in self.learners},
            attention=attention,
            samples=self.samples(),
            heldout_by_length={lr.name: self.heldout_by_length(lr) for lr in self.learners},
            sequential_steps={lr.name: self.sequential_steps(lr) for lr in self.learners},
            calibration={lr.name: self.calibration(lr) for lr in self.learners},
            diverged={lr.name: lr.diverged or not math.isfinite(lr.history[-1].val_loss) for lr in self.learners},
        )
