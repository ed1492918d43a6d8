"""models/attention.py against references: torch's own attention, hand-made cases, invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.attention import (
    MultiHeadAttention,
    causal_mask,
    linear_attention,
    local_attention,
    padding_mask,
    scaled_dot_product_attention,
    sliding_window_mask,
)


def _qkv(b=2, h=3, t=7, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, dtype=dtype) for _ in range(3)]


def test_formula_on_a_hand_computed_case():
    # one query, two keys: scores [1, 0] / sqrt(1) -> softmax [e/(e+1), 1/(e+1)]
    q = torch.tensor([[[[1.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[1.0], [0.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[10.0], [20.0]]]], dtype=torch.float64)
    out, w = scaled_dot_product_attention(q, k, v)
    p = math.e / (math.e + 1)
    assert w[0, 0, 0].tolist() == pytest.approx([p, 1 - p])
    assert out.item() == pytest.approx(10 * p + 20 * (1 - p))


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_equals_torch_sdpa(masked):
    q, k, v = _qkv()
    mask = causal_mask(7) if masked else None
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7, dtype=torch.float64))


def test_multihead_equals_torch_multiheadattention():
    torch.manual_seed(0)
    d, h = 16, 4
    ours = MultiHeadAttention(d, h).double().eval()
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True).double().eval()
    with torch.no_grad():  # torch packs W_Q, W_K, W_V into one in_proj matrix
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 5, d, dtype=torch.float64)
    ctx = torch.randn(2, 9, d, dtype=torch.float64)
    # self-attention, causal: torch's attn_mask uses True = blocked
    out, w = ours(x, causal=True, need_weights=True)
    ref_out, ref_w = ref(x, x, x, attn_mask=~causal_mask(5), average_attn_weights=False)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    # cross-attention with padded keys
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1, 6:] = False
    out, w = ours(x, context=ctx, mask=padding_mask(keep), need_weights=True)
    ref_out, ref_w = ref(x, ctx, ctx, key_padding_mask=~keep, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)


def test_fused_and_explicit_paths_agree():
    torch.manual_seed(1)
    mha = MultiHeadAttention(32, 4).double().eval()
    x = torch.randn(3, 11, 32, dtype=torch.float64)
    for kwargs in ({}, {"causal": True}, {"mask": sliding_window_mask(11, 3)}):
        fused, none = mha(x, **kwargs)
        explicit, w = mha(x, need_weights=True, **kwargs)
        assert none is None and w.shape == (3, 4, 11, 11)
        torch.testing.assert_close(fused, explicit)


def test_causal_future_tokens_do_not_change_the_past():
    torch.manual_seed(2)
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 4, 16)  # change everything after position 5
    a, _ = mha(x, causal=True)
    b, _ = mha(y, causal=True)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_padding_keys_get_zero_weight():
    torch.manual_seed(3)
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    _, w = mha(x, mask=padding_mask(keep), need_weights=True)
    assert (w[1, :, :, 3:] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6))


def test_sliding_window_keys_outside_get_zero_weight():
    mask = sliding_window_mask(8, window=3)
    _, w = scaled_dot_product_attention(*_qkv(t=8), mask)
    for i in range(8):
        for j in range(8):
            inside = 0 <= i - j < 3
            assert (w[..., i, j] > 0).all() if inside else (w[..., i, j] == 0).all()


@pytest.mark.parametrize("t,window", [(20, 4), (16, 8), (5, 8), (33, 7)])
def test_local_attention_equals_masked_full_attention(t, window):
    q, k, v = _qkv(t=t)
    full, _ = scaled_dot_product_attention(q, k, v, sliding_window_mask(t, window))
    torch.testing.assert_close(local_attention(q, k, v, window), full)


def test_linear_attention_matches_its_quadratic_form():
    q, k, v = _qkv()
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    weights = phi_q @ phi_k.transpose(-2, -1)  # the same kernel, written as an n x n matrix
    full = (weights / weights.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(linear_attention(q, k, v), full, rtol=1e-6, atol=1e-6)
    causal = weights.masked_fill(~causal_mask(7), 0)
    torch.testing.assert_close(
        linear_attention(q, k, v, causal=True), (causal / causal.sum(-1, keepdim=True)) @ v, rtol=1e-6, atol=1e-6
    )


def test_causal_mask_with_a_cache_offset():
    # two new queries at positions 3 and 4 of a 5-long sequence
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
