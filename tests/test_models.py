"""Positional encodings, blocks, whole models, decoding and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from models.attention import DecoderCache
from models.blocks import EncoderLayer
from models.checkpoint import load_model, save_checkpoint
from models.decoding import beam_search, filter_logits, greedy, sample
from models.positional import RotaryEmbedding, SinusoidalPositionalEncoding, sinusoidal_table
from models.schedules import noam_lr, warmup_cosine
from models.transformer import (
    GPT,
    EncoderClassifier,
    EncoderClassifierConfig,
    EncoderDecoder,
    EncoderDecoderConfig,
    GPTConfig,
)


def tiny_gpt(positional="rope", context_len=16, seed=0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=11, context_len=context_len, n_layers=2, n_heads=2, d_model=16, d_ff=32)
    cfg.positional, cfg.dropout = positional, 0.0
    return GPT(cfg).double().eval()


def tiny_seq2seq(seed=0) -> EncoderDecoder:
    torch.manual_seed(seed)
    cfg = EncoderDecoderConfig(
        vocab_size=13, max_len=32, n_encoder_layers=2, n_decoder_layers=2, n_heads=2, d_model=16, d_ff=32, dropout=0
    )
    return EncoderDecoder(cfg).double().eval()


# --- positional encodings -------------------------------------------------------------------


def test_sinusoidal_table_matches_the_formula():
    table = sinusoidal_table(50, 8)
    for pos in (0, 1, 17, 49):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_shift_is_a_fixed_linear_map():
    # PE(pos + k) = M_k PE(pos) with M_k built from rotations that do not depend on pos
    d, k = 8, 5
    table = sinusoidal_table(64, d).double()
    m = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = k / 10000 ** (2 * i / d)
        m[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
            [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64
        )
    torch.testing.assert_close(table[:-k] @ m.T, table[k:], atol=1e-6, rtol=0)


def test_rope_scores_depend_only_on_distance():
    rope = RotaryEmbedding(8).double()
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    s1 = (rope(q, 3) * rope(k, 1)).sum()
    s2 = (rope(q, 40) * rope(k, 38)).sum()
    torch.testing.assert_close(s1, s2)


def test_encoder_layer_is_permutation_equivariant_only_without_positions():
    torch.manual_seed(0)
    layer = EncoderLayer(16, 2, 32, dropout=0.0).double().eval()
    pe = SinusoidalPositionalEncoding(16).double()
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out, _ = layer(x)
    out_perm, _ = layer(x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm])
    with_pos, _ = layer(pe(x))
    with_pos_perm, _ = layer(pe(x[:, perm]))
    assert not torch.allclose(with_pos_perm, with_pos[:, perm])


@pytest.mark.parametrize("norm_first", [True, False])
def test_post_and_pre_norm_differ_as_the_formulas_say(norm_first):
    torch.manual_seed(0)
    layer = EncoderLayer(16, 2, 32, dropout=0.0, norm_first=norm_first).double().eval()
    out, _ = layer(torch.randn(2, 5, 16, dtype=torch.float64) * 10)
    if not norm_first:  # post-norm: the output is a LayerNorm output (zero mean, unit variance)
        torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5, dtype=torch.float64), atol=1e-9, rtol=0)
    else:  # pre-norm: the residual stream keeps its scale
        assert out.std() > 3


# --- models -----------------------------------------------------------------------------------


def test_every_forward_returns_all_attention_weights():
    gpt = tiny_gpt()
    out = gpt(torch.randint(0, 11, (2, 7)), need_weights=True)
    assert out.logits.shape == (2, 7, 11) and len(out.attentions) == 2
    assert out.attentions[0]["self"].shape == (2, 2, 7, 7)
    s2s = tiny_seq2seq()
    out = s2s(torch.randint(3, 13, (2, 9)), torch.randint(3, 13, (2, 4)), need_weights=True)
    assert [sorted(a) for a in out.attentions] == [["encoder_self"]] * 2 + [["cross", "self"]] * 2
    assert out.attentions[0]["encoder_self"].shape == (2, 2, 9, 9)
    assert out.attentions[2]["cross"].shape == (2, 2, 4, 9)
    clf = EncoderClassifier(EncoderClassifierConfig(input_dim=5, max_len=20, n_layers=2, d_model=16, n_heads=2))
    out = clf.eval()(torch.randn(3, 12, 5), lengths=torch.tensor([12, 7, 3]), need_weights=True)
    assert out.logits.shape == (3, 10)
    assert (out.attentions[0]["self"][2, :, :, 4:] == 0).all()  # padded frames get no attention


@pytest.mark.parametrize("positional", ["rope", "learned", "sinusoidal"])
def test_kv_cache_gives_the_logits_of_full_recomputation(positional):
    gpt = tiny_gpt(positional)
    idx = torch.randint(0, 11, (2, 12))
    full = gpt(idx).logits
    cache = gpt.new_cache()
    pieces = [gpt(idx[:, :5], cache=cache).logits]  # prefill, then one token at a time
    pieces += [gpt(idx[:, t : t + 1], cache=cache).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_seq2seq_cache_matches_teacher_forcing():
    model = tiny_seq2seq()
    src, tgt = torch.randint(3, 13, (1, 8)), torch.randint(3, 13, (1, 6))
    full = model(src, tgt).logits
    memory, mask, _ = model.encode(src)
    dec = model.target_decoder(memory, mask)
    cache = dec.new_cache()
    steps = [dec.step(tgt[:, t : t + 1], cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_rolling_cache_attends_to_exactly_the_context_window():
    # RoPE: once the sequence is longer than the context, each new token attends to the last
    # context_len keys, as the cropped uncached model does. With one layer the two are equal; with
    # more, cached states also carry what older tokens saw (sliding-window attention, as Mistral).
    ctx = 8
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, context_len=ctx, n_layers=1, n_heads=2, d_model=16, d_ff=32, dropout=0.0)
    gpt = GPT(cfg).double().eval()
    idx = torch.randint(0, 11, (2, 20))
    cache = gpt.new_cache()
    gpt(idx[:, :ctx], cache=cache)
    for t in range(ctx, 20):
        cached = gpt(idx[:, t : t + 1], cache=cache).logits[:, -1]
        cropped = gpt(idx[:, t - ctx + 1 : t + 1]).logits[:, -1]
        torch.testing.assert_close(cached, cropped)
        assert len(cache) == ctx - 1


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_absolute_positions_refill_the_cache_past_the_context(positional):
    gpt = tiny_gpt(positional, context_len=8)
    prompt = torch.randint(0, 11, (1, 5))
    assert torch.equal(greedy(gpt, prompt, 20, use_cache=True), greedy(gpt, prompt, 20, use_cache=False))


def test_top_k_one_and_zero_temperature_equal_greedy():
    gpt = tiny_gpt()
    prompt = torch.randint(0, 11, (1, 3))
    ref = greedy(gpt, prompt, 10)
    top1 = torch.stack(list(sample(gpt, prompt, 10, temperature=1.5, top_k=1)), dim=1)
    assert torch.equal(top1, ref)


def test_seeded_sampling_repeats():
    gpt = tiny_gpt()
    prompt = torch.randint(0, 11, (1, 3))
    runs = [
        torch.stack(list(sample(gpt, prompt, 15, generator=torch.Generator().manual_seed(7))), dim=1) for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert (filter_logits(logits, top_k=2)[0, 2:] == 0).all()
    p = filter_logits(logits, top_p=0.7)  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: keep the first two
    torch.testing.assert_close(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert filter_logits(logits, temperature=0).tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_beam_one_equals_greedy():
    model = tiny_seq2seq()
    for seed in range(3):
        torch.manual_seed(seed)
        src = torch.randint(3, 13, (1, 7))
        memory, mask, _ = model.encode(src)
        start = torch.tensor([[1]])
        ref = greedy(model.target_decoder(memory, mask), start, 12, eos_id=2)[0].tolist()
        ref = ref[: ref.index(2)] if 2 in ref else ref
        best = beam_search(model.target_decoder(memory, mask), start, 1, 12, eos_id=2, alpha=0.0)[0]
        assert best.tokens == ref


def test_beam_search_finds_at_least_the_greedy_log_probability():
    model = tiny_seq2seq(seed=5)
    src = torch.randint(3, 13, (1, 7))
    memory, mask, _ = model.encode(src)
    hyps = beam_search(model.target_decoder(memory, mask), torch.tensor([[1]]), 4, 10, eos_id=2, alpha=0.0)
    greedy_hyp = beam_search(model.target_decoder(memory, mask), torch.tensor([[1]]), 1, 10, eos_id=2, alpha=0.0)[0]
    assert hyps[0].log_prob >= greedy_hyp.log_prob - 1e-9
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_decoder_cache_reorder_follows_beams():
    cache = DecoderCache(1)
    cache.self_attn[0].append(torch.arange(3.0).view(3, 1, 1, 1), torch.zeros(3, 1, 1, 1))
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.self_attn[0].k.flatten().tolist() == [2.0, 2.0, 0.0]


# --- checkpoints and schedules ------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_gpt, tiny_seq2seq])
def test_save_then_load_gives_identical_outputs(tmp_path, make):
    model = make().float()
    save_checkpoint(tmp_path, model, meta={"note": "test"}, dtype=torch.float32)
    loaded = load_model(tmp_path)
    assert loaded.meta == {"note": "test"}
    x = torch.randint(3, 11, (2, 6))
    args = (x,) if isinstance(model, GPT) else (x, x[:, :3])
    torch.testing.assert_close(loaded(*args).logits, model(*args).logits)
    assert loaded.lm_head.weight is loaded.embed.weight  # tying survives the round trip


def test_fp16_checkpoint_is_half_the_size_and_close(tmp_path):
    model = tiny_gpt().float()
    save_checkpoint(tmp_path / "a", model, dtype=torch.float32)
    save_checkpoint(tmp_path / "b", model)
    a, b = (tmp_path / "a" / "model.safetensors").stat().st_size, (tmp_path / "b" / "model.safetensors").stat().st_size
    assert b < 0.6 * a
    x = torch.randint(0, 11, (1, 8))
    torch.testing.assert_close(load_model(tmp_path / "b")(x).logits, model(x).logits, atol=1e-2, rtol=1e-2)


def test_noam_schedule_peaks_at_warmup():
    values = [noam_lr(s, 512, 4000) for s in range(1, 20000, 10)]
    peak_step = 1 + 10 * max(range(len(values)), key=values.__getitem__)
    assert abs(peak_step - 4000) <= 10
    assert noam_lr(4000, 512, 4000) == pytest.approx(512**-0.5 * 4000**-0.5)


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
