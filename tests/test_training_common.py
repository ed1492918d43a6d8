"""training/common.py: config loading and the optimizer's schedule."""

from __future__ import annotations

import pytest
import torch

import training.common as common
from models.schedules import warmup_cosine


def test_schedule_ends_with_the_time_budget(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    cfg = common.TrainingConfig(lr=1.0, warmup_steps=0, max_steps=1000, max_time_s=100.0, min_lr_ratio=0.1)
    multiplier = common.configure_adamw(torch.nn.Linear(2, 2), cfg)["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert multiplier(10) == pytest.approx(warmup_cosine(10, 0, 1000, 0.1))  # no time has passed
    now[0] = 50.0  # half the time gone after only 10 steps: the cosine is half way down
    assert multiplier(10) == pytest.approx(warmup_cosine(500, 0, 1000, 0.1))
    now[0] = 500.0
    assert multiplier(10) == pytest.approx(0.1)


def test_schedule_without_a_time_budget_counts_steps(monkeypatch):
    monkeypatch.setattr(common.time, "monotonic", lambda: 1e9)
    cfg = common.TrainingConfig(warmup_steps=10, max_steps=100, max_time_s=None)
    multiplier = common.configure_adamw(torch.nn.Linear(2, 2), cfg)["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [multiplier(s) for s in (0, 9, 100)] == pytest.approx([0.1, 1.0, cfg.min_lr_ratio])


def test_load_config_applies_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nmodel:\n  d_model: 64\n")
    cfg = common.load_config(common.TrainingConfig, path, ["model.n_layers=3", "max_steps=7"])
    assert (cfg.lr, cfg.max_steps, cfg.model) == (0.01, 7, {"d_model": 64, "n_layers": 3})
    with pytest.raises(ValueError, match="unknown config keys"):
        common.load_config(common.TrainingConfig, path, ["nonsense=1"])
