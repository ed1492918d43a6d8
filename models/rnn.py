"""The models transformers replaced: recurrent sequence-to-sequence networks (GRU or LSTM).

An encoder RNN reads the source one token after another; a decoder RNN writes the target one
token after another. Without attention the decoder sees the source only through the encoder's
last state, one vector for the whole input (Sutskever et al. 2014). With attention (Luong et al.
2015, dot-product form) every decoder state also looks back over all encoder states.

Each token waits for the previous one: an example of S source and T target tokens takes S + T
sequential steps, where a transformer trained with teacher forcing takes one step per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.toy_tasks import PAD
from models.transformer import Output


@dataclass
class RNNConfig:
    vocab_size: int
    cell: str = "gru"  # gru | lstm
    attention: bool = True
    d_model: int = 128
    n_layers: int = 1
    dropout: float = 0.0


def _rnn(config: RNNConfig) -> nn.Module:
    if config.cell not in ("gru", "lstm"):
        raise ValueError(f"unknown recurrent cell {config.cell!r} (gru or lstm)")
    kind = nn.GRU if config.cell == "gru" else nn.LSTM
    dropout = config.dropout if config.n_layers > 1 else 0.0
    return kind(config.d_model, config.d_model, config.n_layers, batch_first=True, dropout=dropout)


class Seq2SeqRNN(nn.Module):
    """Embedding -> encoder RNN -> (last state, all states) -> decoder RNN (+ attention) -> logits."""

    architecture = "seq2seq_rnn"

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=PAD)
        self.encoder = _rnn(c)
        self.decoder = _rnn(c)
        self.combine = nn.Linear(2 * c.d_model, c.d_model) if c.attention else None  # [state; context] -> d
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.d_model, c.vocab_size)

    def sequential_steps(self, source_len: int, target_len: int) -> int:
        """Steps that must run one after another for one example (per layer, pipelined)."""
        return source_len + target_len + 2 * (self.config.n_layers - 1)

    def encode(self, src: Tensor):
        """src (batch, S) -> (memory (batch, S, d), final state, key mask (batch, S))."""
        lengths = (src != PAD).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.dropout(self.embed(src)), lengths, batch_first=True, enforce_sorted=False)
        memory, state = self.encoder(packed)  # packing: the final state is at each row's own end
        memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=src.size(1))
        return memory, state, src != PAD

    def decode(self, tokens: Tensor, state, memory: Tensor, mask: Tensor):
        """tokens (batch, T) -> (logits (batch, T, vocab), new state, attention (batch, T, S) or None)."""
        h, state = self.decoder(self.dropout(self.embed(tokens)), state)
        weights = None
        if self.combine is not None:
            scores = h @ memory.transpose(1, 2) / math.sqrt(h.size(-1))
            weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
            context = weights @ memory
            h = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))
        return self.out(self.dropout(h)), state, weights

    def forward(self, src: Tensor, tgt: Tensor, need_weights: bool = False, teacher_forcing: float = 1.0) -> Output:
        """tgt: the target shifted right. teacher_forcing < 1 feeds the model's own previous guess
        instead of the true token with probability 1 - teacher_forcing (scheduled sampling)."""
        memory, state, mask = self.encode(src)
        if teacher_forcing >= 1.0:
            logits, _, weights = self.decode(tgt, state, memory, mask)
        else:
            steps, all_weights, token = [], [], tgt[:, :1]
            for t in range(tgt.size(1)):
                step_logits, state, w = self.decode(token, state, memory, mask)
                steps.append(step_logits)
                all_weights.append(w)
                if t + 1 < tgt.size(1):  # per row: the true token, or the model's own guess
                    use_truth = torch.rand(tgt.size(0), 1, device=tgt.device) < teacher_forcing
                    token = torch.where(use_truth, tgt[:, t + 1 : t + 2], step_logits.argmax(-1))
            logits = torch.cat(steps, dim=1)
            weights = torch.cat(all_weights, dim=1) if self.combine is not None else None
        attentions = [{"cross": weights[:, None] if weights is not None else None}]
        return Output(logits, attentions if need_weights else None)


class RNNLanguageModel(nn.Module):
    """Next-token prediction with one recurrent stack: embedding -> RNN -> logits."""

    architecture = "rnn_lm"

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.rnn = _rnn(c)
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.d_model, c.vocab_size)

    def sequential_steps(self, length: int) -> int:
        return length + self.config.n_layers - 1

    def forward(self, idx: Tensor, need_weights: bool = False) -> Output:
        h, _ = self.rnn(self.dropout(self.embed(idx)))
        return Output(self.out(self.dropout(h)), [] if need_weights else None)
