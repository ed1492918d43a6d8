"""training/common.py: config loading and the optimizer's schedule."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

import training.common as common
from models.schedules import warmup_cosine


class FakeTrainer:
    """What TrainingClock reads of a Trainer on one process."""

    world_size = 1
    global_step = 0
    should_stop = False


def test_schedule_ends_with_the_time_budget(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    cfg = common.TrainingConfig(lr=1.0, warmup_steps=0, max_steps=1000, max_time_s=100.0, min_lr_ratio=0.1)
    clock = common.TrainingClock(cfg.max_steps, cfg.max_time_s)
    multiplier = common.configure_adamw(torch.nn.Linear(2, 2), cfg, clock)["lr_scheduler"]["scheduler"].lr_lambdas[0]
    trainer = FakeTrainer()
    now[0] = 30.0  # the first step took 30 s (compiling): the clock starts after it
    clock.on_train_batch_end(trainer, None)
    assert multiplier(10) == pytest.approx(warmup_cosine(10, 0, 1000, 0.1))  # no training time yet
    now[0] = 80.0  # half the budget gone after only 10 steps: the cosine is half way down
    clock.on_train_batch_end(trainer, None)
    assert multiplier(10) == pytest.approx(warmup_cosine(500, 0, 1000, 0.1))
    assert multiplier(900) == pytest.approx(warmup_cosine(900, 0, 1000, 0.1))  # steps further along
    assert not trainer.should_stop
    now[0] = 130.0  # the budget is spent: the learning rate is at its floor and training stops
    clock.on_train_batch_end(trainer, None)
    assert multiplier(10) == pytest.approx(0.1)
    assert trainer.should_stop


def test_the_gpu_optimizer_is_one_lightning_can_clip(monkeypatch):
    """Fused AdamW unscales its own gradients, so Lightning refuses to clip them under mixed
    precision (the first GPU vision run stopped at step 1): with grad_clip the update is foreach."""
    from lightning.pytorch.plugins.precision.amp import _optimizer_handles_unscaling

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # configure_adamw's GPU choice, on any machine
    model = torch.nn.Linear(2, 2)
    clipped = common.configure_adamw(model, common.TrainingConfig(grad_clip=1.0))["optimizer"]
    assert not clipped.defaults["fused"] and not _optimizer_handles_unscaling(clipped)
    unclipped = common.configure_adamw(model, common.TrainingConfig(grad_clip=0.0))["optimizer"]
    assert unclipped.defaults["fused"]  # nothing to clip: the whole update in one kernel


def test_step_time_is_the_median_window_so_a_slow_window_does_not_count(monkeypatch):
    """`step_ms` (the train summary's steady-state step time, which the GPU step checks compare):
    one window slowed by a validation or a profiler must not move it; a mark per step, not per batch."""
    now = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    clock = common.TrainingClock(max_steps=10**6, max_time_s=None)
    trainer = FakeTrainer()
    every = clock.MARK_EVERY
    clock.on_train_batch_end(trainer, None)  # the first (compiling) step
    assert clock.step_ms() is None
    for trainer.global_step in range(1, 4 * every + 1):
        now[0] += 0.010 if trainer.global_step <= 2 * every or trainer.global_step > 3 * every else 0.100
        clock.on_train_batch_end(trainer, None)
        clock.on_train_batch_end(trainer, None)  # a second micro-batch of the same optimizer step
    assert len(clock.marks) == 4  # steps 50, 100, 150, 200: windows of 10, 100 (slowed) and 10 ms a step
    assert clock.step_ms() == pytest.approx(10.0)


@pytest.mark.parametrize(("compile_mode", "marks"), [("reduce-overhead", 1), (None, 0), ("max-autotune", 0)])
def test_each_step_tells_cuda_graphs_where_it_begins(monkeypatch, compile_mode, marks):
    """Under compile_mode=reduce-overhead (CUDA graphs) every training step starts with
    cudagraph_mark_step_begin; other modes leave the graphs' bookkeeping alone."""
    calls = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    module = common.TimedModule(common.TrainingConfig(compile=True, compile_mode=compile_mode))
    module.on_train_batch_start(None, 0)
    assert len(calls) == marks


def test_schedule_without_a_time_budget_counts_steps(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    cfg = common.TrainingConfig(warmup_steps=10, max_steps=100, max_time_s=None)
    clock = common.TrainingClock(cfg.max_steps, cfg.max_time_s)
    trainer = FakeTrainer()
    for now[0] in (0.0, 1e9):
        clock.on_train_batch_end(trainer, None)
    multiplier = common.configure_adamw(torch.nn.Linear(2, 2), cfg, clock)["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [multiplier(s) for s in (0, 9, 100)] == pytest.approx([0.1, 1.0, cfg.min_lr_ratio])
    assert not trainer.should_stop


def test_every_rank_takes_rank_zeros_clock():
    """Under DDP the time reading is broadcast from rank 0 (every `every` steps), so all ranks
    have the same learning rate and stop at the same step."""

    class Strategy:
        def __init__(self):
            self.calls = 0

        def broadcast(self, value, src):
            self.calls += 1
            assert src == 0
            return 75.0  # rank 0's elapsed time, whatever this rank's own clock says

    trainer = FakeTrainer()
    trainer.world_size, trainer.strategy = 2, Strategy()
    clock = common.TrainingClock(max_steps=10**6, max_time_s=100.0, every=10)
    clock.on_train_batch_end(trainer, None)  # first step: starts the clock
    for trainer.global_step in range(1, 21):
        clock.on_train_batch_end(trainer, None)
    assert trainer.strategy.calls == 2  # steps 10 and 20
    assert clock.time_progress == pytest.approx(0.75)
    assert clock.progress(5) == pytest.approx(0.75)


def test_load_config_applies_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nmodel:\n  d_model: 64\n")
    cfg = common.load_config(common.TrainingConfig, path, ["model.n_layers=3", "max_steps=7"])
    assert (cfg.lr, cfg.max_steps, cfg.model) == (0.01, 7, {"d_model": 64, "n_layers": 3})
    with pytest.raises(ValueError, match="unknown config keys"):
        common.load_config(common.TrainingConfig, path, ["nonsense=1"])


def test_load_config_refuses_a_key_written_twice(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: a note that lost its comment sign\nlr: 0.01\nmodel:\n  d_model: 64\n")
    with pytest.raises(yaml.YAMLError, match="key written twice: model"):
        common.load_config(common.TrainingConfig, path)
    for config in (Path(__file__).parent.parent / "training" / "configs").glob("*.yaml"):
        assert isinstance(yaml.load(config.read_text(), Loader=common._UniqueKeyLoader), dict), config.name


def test_a_config_extends_another_and_changes_only_what_it_writes(tmp_path):
    (tmp_path / "base.yaml").write_text("lr: 0.01\nmax_steps: 9\nmodel:\n  d_model: 64\n  n_layers: 2\n")
    (tmp_path / "more.yaml").write_text("extends: base.yaml\nlr: 0.005\nmodel:\n  n_layers: 4\n")
    (tmp_path / "most.yaml").write_text("extends: more.yaml\nmax_steps: 3\n")
    cfg = common.load_config(common.TrainingConfig, tmp_path / "most.yaml", ["model.n_heads=2"])
    assert (cfg.lr, cfg.max_steps, cfg.model) == (0.005, 3, {"d_model": 64, "n_layers": 4, "n_heads": 2})
    (tmp_path / "base.yaml").write_text("extends: most.yaml\n")
    with pytest.raises(ValueError, match="config extends itself: most.yaml -> more.yaml -> base.yaml -> most.yaml"):
        common.load_config(common.TrainingConfig, tmp_path / "most.yaml")


def test_every_shipped_config_loads_into_its_tasks_config():
    """A misspelt key in any recipe (not only the ones other tests run) fails here, not an hour into a run."""
    configs = sorted((Path(__file__).parent.parent / "training" / "configs").glob("*.yaml"))
    assert len(configs) > 10
    for path in configs:
        task = path.name.split("-")[0]
        assert task in common.TASKS, path.name
        config = common.load_config(importlib.import_module(f"training.{task}").Config, path)
        assert config.model, path.name


def test_compiled_only_when_asked_and_the_state_dict_keys_stay_clean():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    keys = list(model.state_dict())
    off = common.TrainingConfig(compile=False)
    assert common.compiled(model, off) is model and common.compiled(model.forward, off) == model.forward
    on = common.TrainingConfig(compile=True)
    forward = common.compiled(model.forward, on)  # a compiled bound method: the module keeps its plain one
    assert forward != model.forward and list(model.state_dict()) == keys
    assert common.compiled(model, on) is model  # compiled in place: the same object, the same keys
    assert list(model.state_dict()) == keys and not any("_orig_mod" in k for k in model.state_dict())


def test_compile_mode_reaches_torch_compile_unless_the_task_names_one(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: seen.append(options) or fn)
    model = torch.nn.Linear(3, 4)
    common.compiled(model.forward, common.TrainingConfig(compile=True))
    common.compiled(model, common.TrainingConfig(compile=True, compile_mode="reduce-overhead"))
    common.compiled(model.forward, common.TrainingConfig(compile=True, compile_mode="reduce-overhead"), mode="default")
    common.compiled(model.forward, common.TrainingConfig(compile=False, compile_mode="reduce-overhead"))
    assert seen == [{}, {"mode": "reduce-overhead"}, {"mode": "default"}]


def test_export_writes_fp16_weights_config_and_tokenizer_of_the_plain_model(tmp_path):
    """One export for every task: the uncompiled model in fp16, what load_model and load_tokenizer read."""
    from safetensors.torch import load_file

    from models.checkpoint import load_model
    from models.tokenizers import CharTokenizer, load_tokenizer
    from models.transformer import GPT, GPTConfig

    torch.manual_seed(0)
    module = common.TimedModule(common.TrainingConfig())
    plain = GPT(GPTConfig(vocab_size=5, context_len=8, n_layers=1, n_heads=2, d_model=16, d_ff=32, dropout=0.0))
    module.tokenizer = CharTokenizer(list("abcde"))
    module.model = torch.compile(plain)  # even a wrapped model is saved as the model it wraps
    common.export(module, tmp_path, meta={"note": "tiny"})
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights and all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    assert not any(k.startswith("_orig_mod") for k in weights)
    loaded = load_model(tmp_path)
    assert loaded.meta == {"note": "tiny"}
    assert load_tokenizer(tmp_path).chars == list("abcde")
    ids = torch.tensor([[0, 1, 2, 3]])
    torch.testing.assert_close(loaded(ids).logits, plain.eval()(ids).logits, atol=2e-2, rtol=0)


def test_weight_ema_follows_its_warmed_up_recurrence():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = common.WeightEMA(model, decay=0.9)
    expected = {name: p.detach().clone() for name, p in model.state_dict().items()}
    for step in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(4, 3))  # training mode: moves the BatchNorm statistics and counter
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))  # early steps follow the weights more closely
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                expected[name] = d * expected[name] + (1 - d) * value
            else:
                expected[name] = value.clone()  # the batch counter is copied
    for name, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-5)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_a_task_without_an_ema_refuses_ema_decay():
    from training import generation

    config = generation.Config(model={"n_layers": 1, "d_model": 16, "n_heads": 2, "d_ff": 32}, ema_decay=0.99)
    module = generation.GenerationModule(config, vocab=list("abc"))
    with pytest.raises(ValueError, match="keeps no EMA"):
        module.on_fit_start()
    module.config.ema_decay = 0.0
    module.on_fit_start()  # nothing asked, nothing refused


def test_step_profile_names_the_lines_that_made_the_host_wait(monkeypatch, tmp_path):
    """On CUDA the profiled steps run under torch's sync debug mode: each synchronising call warns
    from its Python line, and the report counts them by line (the mode switch is stubbed here)."""
    import warnings

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    profile = common.StepProfile(tmp_path / "profile.txt")
    assert profile._stop_sync_warnings() is None  # nothing recorded off CUDA
    profile._start_sync_warnings()
    for _ in range(3):
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)  # the same line three times
    warnings.warn("called a synchronizing CUDA operation\nmore detail", stacklevel=1)
    warnings.warn("some deprecation", DeprecationWarning, stacklevel=1)  # recorded, but not a sync
    found = profile._stop_sync_warnings()
    assert modes == ["warn", 0] and sum(found.values()) == 4
    (line, count), (other, once) = found.most_common()
    assert count == 3 and once == 1 and line.startswith("test_training_common.py:") and line != other
    assert line.endswith(": called a synchronizing CUDA operation") and "more detail" not in other
    assert profile.syncs is None and profile.sync_warnings is None  # the window is closed
