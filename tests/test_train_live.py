"""The Train tab: the toy tasks, the RNNs, the live trainer's knobs, each preset's lesson (trained
here with a fixed seed and a step budget), and `/train_live` through gradio_client: it streams,
it stops when cancelled, it refuses bad input and a second trainer with a sentence."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
import torch

from models.attention import MultiHeadAttention, scaled_dot_product_attention
from models.live_training import LiveRun, Settings, set_attention_knobs
from models.rnn import RNNConfig, Seq2SeqRNN
from models.toy_tasks import EOS, SEQ2SEQ_TASKS, TextTask, balanced, is_validation
from models.transformer import EncoderDecoder, EncoderDecoderConfig

torch.set_num_threads(1)

# ----------------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SEQ2SEQ_TASKS))
def test_examples_answer_their_task_and_splits_never_meet(name):
    task = SEQ2SEQ_TASKS[name]
    rng = random.Random(0)
    for split in ("train", "val", "heldout"):
        for _ in range(200):
            e = task.sample(rng, split)
            if name == "copy":
                assert e.target == e.source
            elif name == "reverse":
                assert e.target == e.source[::-1]
            elif name == "sort":
                assert e.target == "".join(sorted(e.source))
            elif name == "add":
                a, b = e.source.split("+")
                assert int(e.target) == int(a) + int(b)
            else:
                assert e.target == ("y" if balanced(e.source) else "n")
            assert len(e.target) <= task.max_target
            if split != "heldout":
                assert is_validation(e) == (split == "val")

    def size(split: str) -> int:  # letters, brackets, or the digits of the longer number
        return max(len(part) for part in task.sample(rng, split).source.split("+"))

    assert min(size("heldout") for _ in range(300)) > max(size("train") for _ in range(300))


def test_brackets_are_half_balanced_and_unbalanced_ones_are_near_misses():
    rng = random.Random(1)
    examples = [SEQ2SEQ_TASKS["brackets"].sample(rng, "train") for _ in range(400)]
    share = sum(e.target == "y" for e in examples) / len(examples)
    assert 0.4 < share < 0.6
    even = [e for e in examples if e.target == "n" and e.source.count("(") == e.source.count(")")]
    assert len(even) > 40  # counting alone cannot tell these from balanced ones


def test_batches_shift_the_target_for_teacher_forcing():
    task = SEQ2SEQ_TASKS["reverse"]
    batch = task.collate([task.make(random.Random(2), 5)])
    assert batch.target_in[0, 0].item() == 1 and batch.target_out[0, -1].item() == EOS
    assert torch.equal(batch.target_in[0, 1:], batch.target_out[0, :-1])
    assert task.vocab.decode(batch.target_out[0].tolist()) == batch.examples[0].target


def test_text_task_splits_and_shifts():
    text = "".join(random.Random(3).choice("abc ") for _ in range(1000))
    task = TextTask(text)
    x, y = task.windows(random.Random(0), 4, "train")
    assert x.shape == (4, task.context) and torch.equal(x[:, 1:], y[:, :-1])
    assert len(task.ids("train")) == 900 and len(task.ids("val")) == 100
    with pytest.raises(ValueError, match="too short"):
        TextTask("tiny text")


# ----------------------------------------------------------------------------------------------
# models and knobs
# ----------------------------------------------------------------------------------------------


def test_rnn_shapes_steps_and_scheduled_sampling():
    task = SEQ2SEQ_TASKS["copy"]
    batch = task.batch(random.Random(0), 8, "train", length=6)
    for cell in ("gru", "lstm"):
        for attention in (True, False):
            model = Seq2SeqRNN(RNNConfig(len(task.vocab), cell, attention, d_model=32))
            out = model(batch.source, batch.target_in, need_weights=True)
            assert out.logits.shape == (8, 7, len(task.vocab))
            weights = out.attentions[0]["cross"]
            if attention:
                assert weights.shape == (8, 1, 7, 6) and torch.allclose(weights.sum(-1), torch.ones(8, 1, 7))
            else:
                assert weights is None
            assert model(batch.source, batch.target_in, teacher_forcing=0.5).logits.shape == out.logits.shape
            assert model.sequential_steps(6, 7) == 13


def test_unscaled_attention_is_softmax_of_raw_scores_in_both_kernels():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 2).eval()
    x = torch.randn(2, 5, 32)
    scaled_out, scaled_w = mha(x, need_weights=True)
    mha.scale = 1.0
    out, weights = mha(x, need_weights=True)
    fused, _ = mha(x)  # PyTorch's kernel, told the same scale
    q, k = mha.split_heads(mha.q_proj(x)), mha.split_heads(mha.k_proj(x))
    assert torch.allclose(weights, torch.softmax(q @ k.transpose(-2, -1), -1), atol=1e-6)
    assert torch.allclose(out, fused, atol=1e-5)
    assert not torch.allclose(weights, scaled_w, atol=1e-3)
    _, reference = scaled_dot_product_attention(q, k, mha.split_heads(mha.v_proj(x)), scale=1.0)
    assert torch.allclose(weights, reference)


def test_causal_switch_and_rope_in_the_encoder_decoder():
    torch.manual_seed(0)
    model = EncoderDecoder(EncoderDecoderConfig(16, 20, 1, 1, 2, 32, 64, 0.0, "rope")).eval()
    src, tgt = torch.randint(3, 16, (1, 6)), torch.randint(3, 16, (1, 5))
    future = torch.ones(5, 5).triu(1).bool()
    causal = model(src, tgt, need_weights=True).attentions[1]["self"][0]
    assert torch.all(causal[:, future] == 0)
    set_attention_knobs(model, scaled=True, causal=False)
    seeing = model(src, tgt, need_weights=True).attentions[1]["self"][0]
    assert torch.all(seeing[:, future] > 0)
    assert model.positional is None and model.encoder.layers[0].self_attn.rope is not None


def test_greedy_with_the_kv_cache_equals_decoding_the_whole_prefix():
    run = LiveRun(Settings(task="reverse", seed=4))
    run.train_for(60, max_steps=30)
    learner = run.learners[0]
    cached = run.greedy(learner, run.val.source[:32])
    run.settings.causal = False  # the same model, decoded without the cache
    full = run.greedy(learner, run.val.source[:32])
    assert cached == full


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers": 0}, "Layers must be between 1 and 4"),
        ({"width": 60}, "must split into 4 heads"),
        ({"task": "juggle"}, "Unknown task"),
        ({"positional": "absolute"}, "Unknown positional encoding"),
        ({"lr": 5.0}, "Learning rate must be between"),
        ({"rnn": "transformer"}, "Unknown recurrent model"),
        ({"task": "text", "text": "too short"}, "The text is too short"),
    ],
)
def test_bad_settings_say_what_to_change(changes, message):
    with pytest.raises(ValueError, match=message):
        Settings(**changes).check()


def test_snapshot_has_every_layer_and_head_and_counts_sequential_steps():
    run = LiveRun(Settings(task="reverse", layers=2, heads=4, rnn="gru+attention"))
    run.train_for(60, max_steps=3)
    snap = run.snapshot()
    weights, queries, keys = snap.attention["cross"]
    assert weights.shape == (2, 4, len(queries), len(keys)) and len(keys) == SEQ2SEQ_TASKS["reverse"].lengths[1]
    assert snap.attention["RNN cross"][0].shape == (1, 1, len(queries), len(keys))
    assert snap.sequential_steps["transformer"] == 4  # 2 encoder + 2 decoder layers
    assert snap.sequential_steps["GRU + ATTENTION"] == 8 + 9  # source + target tokens, one by one
    assert set(snap.heldout_by_length["transformer"]) == set(range(9, 17))
    assert all(0.0 <= c["ece"] <= 1.0 for c in snap.calibration.values())


# ----------------------------------------------------------------------------------------------
# the presets' lessons, trained here (fixed seed, a step budget instead of a clock)
# ----------------------------------------------------------------------------------------------


def train(steps: int, **changes) -> LiveRun:
    run = LiveRun(Settings(**changes))
    run.train_for(1e9, max_steps=steps)
    run.snapshot()
    return run


@pytest.mark.slow
def test_reverse_needs_positions():
    with_positions = train(900, task="reverse").learners[0].history[-1]
    without = train(900, task="reverse", positional="none").learners[0].history[-1]
    assert with_positions.val_accuracy >= 0.95
    assert without.val_accuracy <= 0.10
    sort_without = train(600, task="sort", positional="none").learners[0].history[-1]
    assert sort_without.val_accuracy >= 0.5  # sorting needs no order: the bag of letters is enough
