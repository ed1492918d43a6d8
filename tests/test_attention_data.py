"""The attention contract (models/attention_data.py): every model's public attention() returns the
same weights its forward pass computes, named on both axes; CLS rows and rollout are computed once."""

from __future__ import annotations

import pytest
import torch

from models.analysis import attention_rollout
from models.attention_data import Attention
from models.transformer import GPT, EncoderDecoder, EncoderDecoderConfig, GPTConfig


def softmax_rows(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).softmax(-1)


def test_labels_must_match_the_weights():
    with pytest.raises(ValueError, match="labels"):
        Attention("self", softmax_rows(2, 2, 3, 3), ["a", "b"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="layers, heads"):
        Attention("self", softmax_rows(2, 3, 3), ["a"] * 3, ["a"] * 3)


def test_select_cls_rows_and_rollout_follow_their_definitions():
    w = softmax_rows(3, 2, 5, 5)
    labels = ["CLS", "a", "b", "c", "d"]
    a = Attention("self", w, labels, labels, cls=True)
    torch.testing.assert_close(a.select(1, 0), w[1, 0])
    torch.testing.assert_close(a.select(None, None), w.mean((0, 1)))
    torch.testing.assert_close(a.cls_rows(), w[:, :, 0, 1:])
    # rollout: Abnar & Zuidema's product of (I + A) / 2 over the layers, written out here
    expected = None
    for layer in range(3):
        step = 0.5 * torch.eye(5) + 0.5 * w[layer].mean(0)
        step = step / step.sum(-1, keepdim=True)
        expected = step if expected is None else step @ expected
    torch.testing.assert_close(a.rollout(), expected)
    torch.testing.assert_close(a.rollout(), attention_rollout([w[i : i + 1] for i in range(3)])[0])
    flow = a.cls_rollout()
    torch.testing.assert_close(flow, expected[0, 1:] / expected[0, 1:].sum())
    rollouts = a.as_rollout()
    assert rollouts.kind == "rollout" and rollouts.weights.shape == (3, 1, 5, 5)
    torch.testing.assert_close(rollouts.weights[0, 0], a.rollout(1))
    with pytest.raises(IndexError, match="Layer 4 does not exist"):
        a.select(3, None)
    with pytest.raises(ValueError, match="no CLS"):
        Attention("self", w, labels, labels).cls_rows()


def test_gpt_and_encoder_decoder_hand_out_their_forward_weights():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=11, context_len=16, n_layers=2, n_heads=2, d_model=8, d_ff=16, dropout=0.0)).eval()
    ids = torch.tensor([[1, 4, 2, 7]])
    run = gpt.attention(ids, list("abcd"))
    forward = gpt(ids, need_weights=True)
    torch.testing.assert_close(run.logits, forward.logits)
    causal = run["causal self"]
    assert causal.query_labels == causal.key_labels == list("abcd")
    torch.testing.assert_close(causal.weights, torch.cat([a["self"] for a in forward.attentions]))

    model = EncoderDecoder(EncoderDecoderConfig(13, 16, 2, 1, 2, 8, 16, dropout=0.0)).eval()
    src, tgt = torch.tensor([[5, 6, 7, 2]]), torch.tensor([[1, 8, 9]])
    run = model.attention(src, tgt, list("wxy") + ["</s>"], ["<2de>", "p", "q"], ["p", "q", "</s>"])
    forward = model(src, tgt, need_weights=True)
    torch.testing.assert_close(run.logits, forward.logits)
    assert set(run.maps) == {"encoder self", "decoder self", "cross"}
    assert run["encoder self"].weights.shape == (2, 2, 4, 4)
    assert run["cross"].query_labels == ["p", "q", "</s>"] and run["cross"].key_labels[-1] == "</s>"
    assert run["decoder self"].key_labels[0] == "<2de>"
    torch.testing.assert_close(run["cross"].weights, forward.attentions[-1]["cross"])
    parts = model.attention_layer(0)
    assert parts.attention is model.encoder.layers[0].self_attn and parts.positional_name == "sinusoidal"
    torch.testing.assert_close(parts.embed(src[0]), model.embed(src[0]) * model.config.d_model**0.5)
