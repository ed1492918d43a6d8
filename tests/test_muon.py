"""training/muon.py: Newton-Schulz against the exact orthogonal factor from an SVD, which weights
Muon takes, and Muon lowering a loss under the schedule that configure_adamw builds."""

from __future__ import annotations

import pytest
import torch

from models.transformer import GPT, GPTConfig
from training.common import TrainingConfig, configure_adamw
from training.muon import MuonWithAdamW, hidden_matrices, newton_schulz


@pytest.mark.parametrize("shape", [(64, 160), (96, 96), (200, 50)])
def test_newton_schulz_gives_singular_values_near_one_and_the_svds_directions(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape) * 7.0  # any scale: the iteration normalises first
    out = newton_schulz(g, steps=5)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    assert s.max() / s.min() > 2  # the input is far from orthogonal
    assert torch.linalg.svdvals(out).max() < 1.25
    # same singular vectors: U^T out V is nearly diagonal, its diagonal the new singular values
    inner = u.T @ out @ vh.T
    off_diagonal = inner - torch.diag_embed(inner.diagonal())
    assert off_diagonal.abs().max() < 0.05
    new = inner.diagonal()
    # every direction at least 2% as strong as the strongest lands in the quintic's band around 1
    # (not exactly on 1); weaker ones are raised too, from ~0.01 to ~0.5 in five iterations
    assert new[s >= 0.02 * s.max()].min() > 0.6 and new.min() > 0.3
    polar = u @ vh  # the exact answer the iteration approximates
    assert torch.nn.functional.cosine_similarity(out.flatten(), polar.flatten(), dim=0) > 0.97


def test_newton_schulz_is_batched_and_transposes_tall_matrices():
    torch.manual_seed(1)
    g = torch.randn(3, 40, 24)
    batched = newton_schulz(g)
    for i in range(3):
        torch.testing.assert_close(batched[i], newton_schulz(g[i]))
    torch.testing.assert_close(newton_schulz(g[0].T), newton_schulz(g[0]).T)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = GPT(GPTConfig(vocab_size=20, context_len=8, n_layers=2, n_heads=2, d_model=16, d_ff=32, qk_norm=True))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for p in hidden_matrices(model)}
    expected = {f"layers.{i}.{m}.weight" for i in range(2) for m in ("self_attn.q_proj", "self_attn.k_proj",
                "self_attn.v_proj", "self_attn.out_proj", "ff.fc1", "ff.fc2")}  # fmt: skip
    assert muon == expected  # not the (tied) embedding, the head, norms or QK-norm gains
    untied = GPT(GPTConfig(vocab_size=20, context_len=8, n_layers=1, n_heads=2, d_model=16, d_ff=32, tie_weights=False))
    assert untied.lm_head.weight is not untied.embed.weight
    assert all(p is not untied.lm_head.weight for p in hidden_matrices(untied)) and len(hidden_matrices(untied)) == 6

    optimizer = configure_adamw(model, TrainingConfig(optimizer="muon", muon_lr=0.03, lr=1e-3))["optimizer"]
    assert isinstance(optimizer, MuonWithAdamW)
    groups = optimizer.param_groups
    assert groups[0]["muon"] and groups[0]["initial_lr"] == 0.03 and {names[id(p)] for p in groups[0]["params"]} == muon
    adamw = [p for g in groups[1:] for p in g["params"]]
    assert all(g["initial_lr"] == 1e-3 for g in groups[1:])  # the schedule scales both from here
    assert len(adamw) + len(muon) == len(list(model.parameters()))  # each parameter once
    with pytest.raises(ValueError, match="unknown optimizer"):
        configure_adamw(model, TrainingConfig(optimizer="sgd"))


def test_a_few_muon_steps_lower_a_toy_loss_and_the_schedule_moves_both_learning_rates():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32))
    x = torch.randn(256, 8)
    target = x @ torch.randn(8, 32) * 0.5
    config = TrainingConfig(optimizer="muon", muon_lr=0.05, lr=3e-3, warmup_steps=2, max_steps=40)
    built = configure_adamw(model, config)
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    muon_params = set(map(id, hidden_matrices(model)))
    assert muon_params == {id(model[0].weight), id(model[2].weight)}
    before = {id(p): p.detach().clone() for p in model.parameters()}
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(x), target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    assert losses[-1] < 0.5 * losses[0]
    assert all(not torch.equal(before[id(p)], p) for p in model.parameters())  # biases moved too (AdamW)
    assert optimizer.param_groups[0]["lr"] < 0.05 * 0.2 and optimizer.adamw.param_groups[0]["lr"] < 3e-3 * 0.2
    # the optimizer's state round-trips with the AdamW half inside
    state = optimizer.state_dict()
    fresh = configure_adamw(model, config)["optimizer"]
    fresh.load_state_dict(state)
    assert len(fresh.adamw.state) == len(optimizer.adamw.state) > 0
    assert torch.equal(fresh.state[model[0].weight]["momentum"], optimizer.state[model[0].weight]["momentum"])
