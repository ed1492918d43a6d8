"""Text generation: Tiny Shakespeare data, the LightningModule, evaluation, the Generate tab's
functions (streaming, KV cache, bad input) and the train CLI end to end."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import warnings
from collections import deque
from pathlib import Path

import pytest
import torch

from demos import generation as tab
from demos.common import get_model
from models.checkpoint import load_model, save_checkpoint
from models.decoding import sample
from models.fast_decoding import FastDecoder
from models.tokenizers import CharTokenizer, load_tokenizer
from models.transformer import GPT, GPTConfig
from training import generation
from training.generation import Config, GenerationModule, ShakespeareData, evaluate, next_token_loss

ROOT = Path(__file__).resolve().parent.parent
TEXT = "".join(f"{w.upper()}:\nthe quick brown fox jumps over the lazy dog {i}.\n\n" for i, w in enumerate("ab" * 40))
TINY_MODEL = {"context_len": 16, "n_layers": 2, "n_heads": 2, "d_model": 32, "d_ff": 64, "dropout": 0.0}


def tiny_config(**overrides) -> Config:
    values = {"model": dict(TINY_MODEL), "batch_size": 8, "val_windows": 16, "warmup_steps": 2, "max_steps": 40}
    return Config(**{**values, **overrides})


def write_data(folder: Path, text: str = TEXT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / generation.DATA_FILE).write_bytes(gzip.compress(text.encode("utf-8")))
    return folder


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch) -> Path:
    """A random tiny GPT over TEXT's characters, saved as checkpoints/generation for the tab."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **TINY_MODEL))
    with torch.no_grad():  # larger weights than the 0.02 init: clear arg-max gaps, no near-ties
        for p in model.parameters():
            p.mul_(10.0)
    folder = tmp_path / "checkpoints" / "generation"
    save_checkpoint(folder, model, dtype=torch.float32)
    tokenizer.save(folder)
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return folder


# --- data ---------------------------------------------------------------------------------------


def test_split_and_vocabulary_on_tiny_shakespeare(shared_data):
    text = generation.load_text(shared_data)
    data = ShakespeareData(text, Config(), context_len=256)
    assert len(text) == 1_115_394
    assert data.tokenizer.vocab_size == 65
    assert len(data.train_tokens) == int(len(text) * 0.9)  # nanoGPT's split
    assert len(data.train_tokens) + len(data.val_tokens) == len(text)
    assert data.tokenizer.decode(data.val_tokens[:100].tolist()) == text[int(len(text) * 0.9) :][:100]


def test_vocabulary_round_trips_through_vocab_json(tmp_path):
    tokenizer = CharTokenizer.from_text(TEXT)
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.chars == sorted(set(TEXT))
    assert loaded.decode(loaded.encode(TEXT)) == TEXT


def test_windows_are_next_character_pairs_inside_their_split():
    config = tiny_config(val_windows=64)
    data = ShakespeareData(TEXT, config, context_len=16)
    ctx = 16
    train_starts = next(iter(data.train_dataloader()))
    inputs, targets = data.on_after_batch_transfer(train_starts, 0)
    assert inputs.shape == targets.shape == (config.batch_size, ctx)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one
    assert int(train_starts.max()) + ctx < data.n_train  # a training window never reads validation text
    val_starts = data.val_offsets()
    assert int(val_starts.min()) >= data.n_train and int(val_starts.max()) + ctx < len(data.tokens)
    assert torch.equal(val_starts, data.val_offsets())  # the same fixed windows every time


def test_too_short_text_is_refused():
    with pytest.raises(ValueError, match="too short"):
        ShakespeareData("abc" * 20, tiny_config(), context_len=16)


# --- training -----------------------------------------------------------------------------------


def test_a_training_step_never_makes_the_host_wait():
    """Nothing in the step reads a device value on the host (see tests/host_waits.py)."""
    from tests.host_waits import HostWaits

    config = tiny_config(lr=3e-3)
    data = ShakespeareData(TEXT, config, context_len=16)
    module = GenerationModule(config, data.tokenizer.chars)
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    with warnings.catch_warnings(), HostWaits() as waits:  # Lightning warns that self.log has no Trainer
        warnings.simplefilter("ignore")
        module.training_step(batch, 0).backward()
    assert waits.calls == []


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    config = tiny_config(lr=3e-3)
    data = ShakespeareData(TEXT, config, context_len=16)
    module = GenerationModule(config, data.tokenizer.chars)
    optimizer = module.configure_optimizers()["optimizer"]
    fixed = data.on_after_batch_transfer(data.val_offsets(), 0)

    def val_loss() -> float:
        with torch.no_grad():
            return next_token_loss(module.model(fixed[0]).logits, fixed[1]).item()

    before = val_loss()
    assert before == pytest.approx(math.log(data.tokenizer.vocab_size), abs=0.3)  # ~uniform at init
    batches = iter(data.train_dataloader())
    with warnings.catch_warnings():  # Lightning warns that self.log has no Trainer here
        warnings.simplefilter("ignore")
        for _ in range(30):
            loss = module.training_step(data.on_after_batch_transfer(next(batches), 0), 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert val_loss() < before - 0.5


def test_evaluate_scores_every_validation_character(tmp_path):
    data_dir = write_data(tmp_path / "data")
    tokenizer = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **TINY_MODEL))
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model)
    tokenizer.save(folder)
    n_val = len(TEXT) - int(len(TEXT) * 0.9)

    metrics = evaluate(folder, data_dir)
    assert math.isfinite(metrics["val_loss"]) and metrics["tokens"] == n_val - 1
    assert metrics["bits_per_char"] == pytest.approx(metrics["val_loss"] / math.log(2), abs=1e-3)
    assert evaluate(folder, data_dir, limit=2)["tokens"] == 2 * 16

    # hand-computed case: all-zero weights give equal logits, so the loss is ln(vocab) exactly
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    save_checkpoint(folder, model)
    assert evaluate(folder, data_dir)["val_loss"] == pytest.approx(math.log(tokenizer.vocab_size), abs=1e-4)


@pytest.mark.slow
def test_train_cli_exports_a_loadable_checkpoint(tmp_path):
    data_dir, out = write_data(tmp_path / "data"), tmp_path / "out"
    tiny = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
    cmd = [sys.executable, "-m", "training.train", "generation", "--data-dir", str(data_dir), "--out", str(out)]
    cmd += ["--log-dir", str(tmp_path / "runs"), "--accelerator", "cpu", "--profile", "2"]
    cmd += ["--set", "max_steps=5", "val_every=3", "val_windows=8", "batch_size=4", *tiny]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 5 and math.isfinite(summary["last_validation"]["val/loss"])
    log = (tmp_path / "runs" / "generation" / "validation.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in log] == [3, 5]  # training ended between validations: one more
    model = load_model(out)
    assert isinstance(model, GPT) and model.context_len == 16
    assert load_tokenizer(out).chars == sorted(set(TEXT))
    assert (tmp_path / "runs" / "generation" / "validation.jsonl").exists()
    # --profile: steps 2.. under torch.profiler (the run ends inside the 20-step window), every hook timed
    profile = (tmp_path / "runs" / "generation" / "profile.txt").read_text()
    assert profile.startswith("steps 2..4 on cpu\nwall per step: ") and "aten::mm" in profile
    assert "optimizer_step" in (tmp_path / "runs" / "generation" / "fit-profile-hooks.txt").read_text()


@pytest.mark.slow
def test_ablation_bench_runs_the_recipe_and_each_variant_in_its_own_process(tmp_path):
    """bench/ablations.py (what each choice of the GPU recipe buys): a changed setting changes the
    result, and a variant that cannot run is reported without stopping the others."""
    from bench import ablations

    data_dir = write_data(tmp_path / "data")
    tiny = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
    result = ablations.main(
        ["generation", "--config", str(ROOT / "training/configs/generation-cpu-tiny.yaml"), "--data-dir", str(data_dir)]
        + ["--accelerator", "cpu", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "ablations.json")]
        + ["--set", "max_steps=4", "val_every=2", "val_windows=8", "batch_size=4", *tiny]
        + ["--variant", "relu2", "model.activation=relu2", "--variant", "broken", "model.no_such_field=1"]
    )
    recipe, relu2, broken = result["runs"]
    assert [r["name"] for r in result["runs"]] == ["recipe", "relu2", "broken"]
    assert (
        recipe["steps"] == relu2["steps"] == 4
        and recipe["changes"] == []
        and relu2["changes"] == ["model.activation=relu2"]
    )
    rows = [
        json.loads(line) for line in (tmp_path / "runs/recipe/generation/validation.jsonl").read_text().splitlines()
    ]
    assert recipe["best"]["value"] == round(min(r["val/loss"] for r in rows), 4) and [r["step"] for r in rows] == [2, 4]
    assert relu2["best"]["value"] != recipe["best"]["value"]  # the same seed, another activation
    assert "failed" in broken and "no_such_field" in "\n".join(broken["log_tail"])
    assert json.loads((tmp_path / "ablations.json").read_text()) == result


# --- the Generate tab's functions ---------------------------------------------------------------


def collect(**kwargs) -> tab.Update:
    return deque(tab.generate(**kwargs), maxlen=1)[0]  # the final update


def test_kv_cache_gives_the_same_greedy_text(tiny_checkpoint):
    # prompt + new tokens fit in the context, where cached and uncached decoding must agree exactly
    kwargs = {"prompt": "the quick", "max_new_tokens": 7, "temperature": 0.0}
    cached, uncached = collect(**kwargs, use_cache=True), collect(**kwargs, use_cache=False)
    assert cached.tokens == uncached.tokens == 7
    assert cached.text == uncached.text


def test_shipped_model_cache_agrees_past_the_context_and_writes_shakespeare_characters():
    if not (tab_dir := ROOT / "checkpoints" / "generation").joinpath("config.json").exists():
        pytest.skip(f"no shipped checkpoint in {tab_dir}")
    # 7 + 160 characters: past the 128-character context, where the sliding window takes over
    kwargs = {"prompt": "ROMEO:\n", "max_new_tokens": 160}
    for settings in ({"temperature": 0.0}, {"temperature": 0.8, "seed": 5}):
        cached = collect(**kwargs, **settings, use_cache=True)
        uncached = collect(**kwargs, **settings, use_cache=False)
        assert cached.text == uncached.text and len(cached.text) == 160
    assert set(cached.text) <= set(load_tokenizer(tab_dir).chars)


class RecordingDecoder:
    """A GPT (or a FastDecoder) as a models.decoding Decoder that keeps the last-position logits
    of every step."""

    def __init__(self, model: GPT | FastDecoder) -> None:
        self.model, self.logits = model, []
        self.context_len, self.rolling_cache = model.context_len, model.rolling_cache
        self.receptive_field = model.receptive_field

    def new_cache(self):
        return self.model.new_cache()

    def step(self, tokens, cache, position=0):
        logits = self.model.step(tokens, cache, position=position)
        self.logits.append(logits[:, -1])
        return logits


def decode_both_ways(model: GPT, prompt: list[int], n_new: int, temperature: float, seed: int = 0, fast=False):
    """{use_cache: (new tokens, the logits each was drawn from)} from models.decoding.sample;
    `fast`: the cached run goes through FastDecoder, as the Generate tab's does."""
    runs = {}
    for use_cache in (True, False):
        recorder = RecordingDecoder(FastDecoder(model) if fast and use_cache else model)
        generator = torch.Generator().manual_seed(seed)
        steps = sample(recorder, torch.tensor([prompt]), n_new, temperature, use_cache=use_cache, generator=generator)
        runs[use_cache] = (torch.cat(list(steps)), torch.cat(recorder.logits))
    return runs


def windowed_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = {"vocab_size": 11, "context_len": 8, "n_layers": 3, "n_heads": 2, "d_model": 16, "d_ff": 32}
    model = GPT(GPTConfig(**{**config, "dropout": 0.0, **overrides})).double().eval()
    with torch.no_grad():  # 3x the 0.02 init: tokens far back visibly change the logits (10x saturates)
        for p in model.parameters():
            p.mul_(3.0)
    return model


def test_past_the_context_every_layer_attends_through_a_sliding_window():
    # the definition, checked against the explicit formula: a forward over the whole text where
    # each layer's query i sees keys i - context_len + 1 .. i, written out with sliding_window_mask
    from models.attention import scaled_dot_product_attention, sliding_window_mask

    model = windowed_gpt()
    idx = torch.randint(0, 11, (2, 40))
    x = model.embed(idx)
    for layer in model.layers:
        attn = layer.self_attn
        h = layer.self_residual.norm(x)
        q, k = attn.rope(attn.split_heads(attn.q_proj(h))), attn.rope(attn.split_heads(attn.k_proj(h)))
        v = attn.split_heads(attn.v_proj(h))  # values are not rotated
        out, _ = scaled_dot_product_attention(q, k, v, sliding_window_mask(40, 8))
        x = x + attn.out_proj(out.transpose(1, 2).reshape(2, 40, -1))
        x = x + layer.ff(layer.ff_residual.norm(x))
    expected = model.lm_head(model.norm(x))
    torch.testing.assert_close(model(idx).logits, expected)

    cache = model.new_cache()  # the cache computes the same, one token at a time
    steps = [model(idx[:, :5], cache=cache).logits] + [
        model(idx[:, t : t + 1], cache=cache).logits for t in range(5, 40)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected)
    assert len(cache) == 7  # context_len - 1 keys wait for the next token


def test_receptive_field_is_exactly_what_the_next_token_depends_on():
    model = windowed_gpt(seed=1)
    assert model.receptive_field == 3 * (8 - 1) + 1
    idx = torch.randint(0, 11, (1, 40))
    last = model(idx).logits[0, -1]
    outside, inside = idx.clone(), idx.clone()
    outside[0, 40 - model.receptive_field - 1] = (idx[0, 40 - model.receptive_field - 1] + 1) % 11
    inside[0, 40 - model.receptive_field] = (idx[0, 40 - model.receptive_field] + 1) % 11
    torch.testing.assert_close(model(outside).logits[0, -1], last)
    assert (model(inside).logits[0, -1] - last).abs().max() > 1e-6
    # the uncached path's crop: the last receptive_field tokens at their own positions suffice
    start = 40 - model.receptive_field
    torch.testing.assert_close(model(idx[:, start:], position=start).logits[0, -1], last)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_cache_on_and_off_decode_the_same_tokens_far_past_the_context(temperature, positional):
    model = windowed_gpt(seed=2, positional=positional)
    runs = decode_both_ways(model, [1, 2, 3], 120, temperature, seed=4)  # 15 contexts, 5 receptive fields
    assert torch.equal(runs[True][0], runs[False][0])
    torch.testing.assert_close(runs[True][1], runs[False][1])


def test_cached_steps_run_on_one_thread_and_give_the_threads_back():
    model, seen = windowed_gpt(), []
    step = model.step
    model.step = lambda tokens, cache, position=0: seen.append(torch.get_num_threads()) or step(tokens, cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        list(sample(model, torch.tensor([[1, 2, 3]]), 4, 1.0))
        assert seen == [2, 1, 1, 1]  # the prompt on both threads, each new token on one
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_shipped_model_writes_the_same_400_characters_with_and_without_the_cache():
    if not (folder := ROOT / "checkpoints" / "generation").joinpath("config.json").exists():
        pytest.skip(f"no shipped checkpoint in {folder}")
    model, tokenizer = load_model(folder).eval(), load_tokenizer(folder)
    prompt = tokenizer.encode(tab.EXAMPLES[0][0])
    for temperature in (0.0, 0.8):  # greedy, then sampled with a seed
        runs = decode_both_ways(model, prompt, 400, temperature, seed=3, fast=True)  # as the tab decodes
        assert torch.equal(runs[True][0], runs[False][0])  # token for token, past the 128-token window 3 times
        assert (runs[True][1] - runs[False][1]).abs().max() < 1e-3  # float32: summation order only


def test_stream_yields_one_more_character_each_time(tiny_checkpoint):
    updates = list(tab.generate("ab", max_new_tokens=5, temperature=1.0, seed=3))
    assert [u.tokens for u in updates] == [1, 2, 3, 4, 5]
    assert all(b.text.startswith(a.text) for a, b in zip(updates, updates[1:], strict=False))
    assert updates[-1].done and not updates[0].done
    assert updates[-1].tokens_per_s > 0 and updates[-1].first_token_ms > 0
    again = list(tab.generate("ab", max_new_tokens=5, temperature=1.0, seed=3))
    assert again[-1].text == updates[-1].text  # the seed fixes the sample


def test_unknown_empty_and_long_prompts(tiny_checkpoint):
    tokenizer = load_tokenizer(tiny_checkpoint)
    prepared = tab.prepare_prompt("thé quick→fox", tokenizer, 16)
    assert prepared.text == "th quickfox"
    assert "'é'" in prepared.notes[0] and "'→'" in prepared.notes[0]

    empty = tab.prepare_prompt("", tokenizer, 16)
    assert empty.text == "\n" and "empty" in empty.notes[0]
    only_unknown = tab.prepare_prompt("ÆØÅ", tokenizer, 16)
    assert only_unknown.text == "\n" and len(only_unknown.notes) == 2

    long = "the lazy dog " * 5
    cut = tab.prepare_prompt(long, tokenizer, 16)
    assert cut.text == long[-16:] and "last 16" in cut.notes[0]

    update = collect(prompt="ñ" * 3, max_new_tokens=2, temperature=0.0)
    assert update.prompt == "\n" and update.tokens == 2 and len(update.notes) == 2


@pytest.mark.parametrize(
    ("field", "value", "expected", "note"),
    [
        ("max_new_tokens", -5, 1, "outside"),
        ("max_new_tokens", 10**9, tab.MAX_NEW_TOKENS, "outside"),
        ("temperature", -1.0, 0.0, "outside"),
        ("temperature", 1e6, tab.MAX_TEMPERATURE, "outside"),
        ("top_k", 0, None, "off"),
        ("top_k", -3, None, "off"),
        ("top_p", 7.0, None, "outside"),
        ("top_p", -0.5, 0.01, "outside"),
    ],
)
def test_absurd_values_are_clamped_with_a_note(field, value, expected, note):
    settings = {"max_new_tokens": 10, "temperature": 1.0, "top_k": None, "top_p": None, "seed": 0}
    settings[field] = value
    notes: list[str] = []
    sampling = tab.check_sampling(settings["temperature"], settings["top_k"], settings["top_p"], vocab_size=20)
    n_new, _ = tab.check_length_and_seed(settings["max_new_tokens"], settings["seed"], notes)
    got = n_new if field == "max_new_tokens" else getattr(sampling, field)
    assert got == expected
    assert any(note in n for n in notes + sampling.notes)


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 3.5), ("seed", "abc"), ("seed", -1), ("temperature", "hot"), ("temperature", float("nan"))],
)
def test_unusable_values_raise_a_readable_error(tiny_checkpoint, field, value):
    kwargs = {"prompt": "the", "max_new_tokens": 3, "temperature": 1.0, "seed": 0, field: value}
    with pytest.raises(tab.InputError, match="must be"):
        collect(**kwargs)


def test_next_token_distribution_is_sorted_and_matches_the_model(tiny_checkpoint):
    model, tokenizer = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    pairs = tab.next_token_distribution("the quick", temperature=1.0)
    probs = [p for _, p in pairs]
    assert len(pairs) == tab.TOP_N and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    reference = model(torch.tensor([tokenizer.encode("the quick")])).logits[0, -1].softmax(-1)
    assert probs[0] == pytest.approx(reference.max().item(), abs=1e-5)
    assert pairs[0][0] == tokenizer.chars[int(reference.argmax())]

    assert [p for _, p in tab.next_token_distribution("the quick", 0.0)][:2] == [1.0, 0.0]  # greedy
    top3 = [p for _, p in tab.next_token_distribution("the quick", 1.0, top_k=3)]
    assert sum(p > 0 for p in top3) == 3 and sum(top3) == pytest.approx(1.0, abs=1e-5)
    hot = [p for _, p in tab.next_token_distribution("the quick", 3.0)]
    assert hot[0] < probs[0]  # a higher temperature flattens the distribution


def test_gradio_handler_turns_mistakes_into_messages(tiny_checkpoint):
    import gradio as gr

    with pytest.raises(gr.Error, match="seed must be a whole number"):
        list(tab._stream("the", 5, 1.0, 20, 1.0, "abc", True))
    text, stats = list(tab._stream("the", 5, 0.0, 20, 1.0, 0, True))[-1]
    assert text.startswith("the") and len(text) == 8 and "tokens/s" in stats


@pytest.mark.slow
def test_generate_endpoint_streams_and_explains_bad_values(tiny_checkpoint, monkeypatch):
    import gradio as gr
    from gradio_client import Client

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with gr.Blocks() as demo:
        tab.build()
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        text, stats = client.predict("the", 10**9, 1e9, 0, 7, 3, True, api_name="/generate")
        assert len(text) == 3 + tab.MAX_NEW_TOKENS and "1000 is used" in stats and "top-k filtering is off" in stats
        with pytest.raises(Exception, match="seed must be a whole number"):
            client.predict("the", 5, 1.0, 10, 1.0, "abc", True, api_name="/generate")
        job = client.submit("the", 200, 0.8, 10, 0.9, 1, False, api_name="/generate")
        outputs = list(job)
        assert len(outputs) >= 2 and outputs[-1][0].startswith(outputs[0][0])  # streamed, growing
        assert client.predict("the", 0.5, 10, 1.0, api_name="/next_token") is not None
    finally:
        demo.close()


# --- options from fast small-GPT training: QK-norm, ReLU^2, an untied head ---------------------

FAST_OPTIONS = [{"qk_norm": True}, {"activation": "relu2"}, {"tie_weights": False}]


@pytest.mark.parametrize("option", FAST_OPTIONS, ids=lambda o: next(iter(o)))
def test_each_option_changes_the_forward_and_survives_the_checkpoint(option, tmp_path):
    base, model = windowed_gpt(seed=5), windowed_gpt(seed=5, **option)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".q_norm." in k or ".k_norm." in k or k == "lm_head.weight" for k in missing)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_norm." in name:  # QK-norm gains away from 1, so they matter
                p.copy_(torch.rand_like(p) + 0.5)
            if name == "lm_head.weight":  # untied: the head is its own matrix
                p.add_(torch.randn_like(p) * 0.1)
    idx = torch.randint(0, 11, (2, 8))
    assert (model(idx).logits - base(idx).logits).abs().max() > 1e-3
    if "tie_weights" in option:
        assert model.lm_head.weight is not model.embed.weight and "lm_head.weight" in model.state_dict()

    save_checkpoint(tmp_path, model, dtype=torch.float32)
    loaded = load_model(tmp_path).double()
    assert all(getattr(loaded.config, key) == value for key, value in option.items())
    torch.testing.assert_close(loaded(idx).logits, model(idx).logits, rtol=0, atol=1e-6)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation"):
        GPT(GPTConfig(activation="swish"))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cache_on_and_off_agree_with_every_fast_option_on(temperature):
    model = windowed_gpt(seed=6, qk_norm=True, activation="relu2", tie_weights=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_norm." in name:
                p.copy_(torch.rand_like(p) + 0.5)
    for fast in (False, True):
        runs = decode_both_ways(model, [1, 2, 3], 60, temperature, seed=4, fast=fast)  # far past the context of 8
        assert torch.equal(runs[True][0], runs[False][0])
        torch.testing.assert_close(runs[True][1], runs[False][1])


FAST_STEP_OPTIONS = [
    {},
    {"qk_norm": True, "activation": "relu2", "tie_weights": False},
    {"positional": "learned", "bias": True, "activation": "relu"},
    {"positional": "sinusoidal"},
    {"d_model": 128, "n_heads": 2, "d_ff": 256},  # 64-wide heads, as served: other vector loops
]


@pytest.mark.parametrize(
    "options", FAST_STEP_OPTIONS, ids=["rope", "qk_norm-relu2-untied", "learned-bias", "sinusoidal", "wide-heads"]
)
@pytest.mark.parametrize("float16_kept", [False, True], ids=["float32", "float16_kept"])
def test_fast_step_gives_the_module_steps_logits_bit_for_bit(tmp_path, options, float16_kept):
    from models.checkpoint import keep_linears_in_float16

    torch.manual_seed(0)
    config = {"vocab_size": 11, "context_len": 8, "n_layers": 3, "n_heads": 2, "d_model": 16, "d_ff": 32}
    save_checkpoint(tmp_path, GPT(GPTConfig(**{**config, **options}, dropout=0.1)))  # float16 numbers, as shipped
    model = load_model(tmp_path)
    with torch.no_grad():
        for name, p in model.named_parameters():  # gains and biases away from 1 and 0
            if "norm" in name or "bias" in name:
                p.copy_((torch.rand_like(p) + 0.5).half().float())
    if float16_kept:
        keep_linears_in_float16(model)
    fast = FastDecoder(model)
    idx = torch.randint(0, 11, (2, 40))
    with torch.inference_mode():
        caches = model.new_cache(), fast.new_cache()
        assert torch.equal(model.step(idx[:, :3], caches[0]), fast.step(idx[:, :3], caches[1]))  # the prompt
        end = 40 if model.rolling_cache else 8  # a crop-and-refill decoder refills past its context
        for t in range(3, end):
            one = idx[:, t : t + 1]
            module_logits, fast_logits = model.step(one, caches[0]), fast.step(one, caches[1])
            assert torch.equal(module_logits, fast_logits), f"step {t}"
        assert caches[0].position == caches[1].position == end
        assert len(caches[0]) == len(caches[1])
    grads = fast.step(idx[:, :1], fast.new_cache())  # with gradients on, through the modules
    assert grads.requires_grad and grads.grad_fn is not None


def spy_on_model_steps(model: GPT) -> list[int]:
    """Record the length of what each call to model.step gets."""
    calls, step = [], model.step
    model.step = lambda tokens, cache, position=0: calls.append(tokens.size(1)) or step(tokens, cache, position)
    return calls


def test_fast_decoder_leaves_what_it_does_not_write_out_to_the_model():
    config = {"vocab_size": 11, "context_len": 8, "n_layers": 2, "n_heads": 2, "d_model": 16, "d_ff": 32}
    post_norm = GPT(GPTConfig(**config, norm_first=False)).eval()
    calls = spy_on_model_steps(post_norm)
    texts = [[int(t) for t in sample(d, torch.tensor([[1, 2]]), 5, 0.0)] for d in (FastDecoder(post_norm), post_norm)]
    assert texts[0] == texts[1]
    assert calls[:5] == [2, 1, 1, 1, 1]  # post-norm: every step through the model

    pre_norm = GPT(GPTConfig(**config)).eval()
    fast, calls = FastDecoder(pre_norm), spy_on_model_steps(pre_norm)
    list(sample(fast, torch.tensor([[1, 2]]), 5, 0.0))
    assert calls == [2]  # the prompt through the model, then every new token on the flat step
    pre_norm.train()  # dropout on: through the modules again
    with torch.no_grad():
        fast.step(torch.tensor([[1]]), fast.new_cache())
    assert calls == [2, 1]


def test_matrices_kept_in_float16_compute_exactly_what_the_float32_model_does(tmp_path):
    from models.checkpoint import Float16Linear, keep_linears_in_float16

    torch.manual_seed(0)
    config = {"vocab_size": 11, "context_len": 8, "n_layers": 2, "n_heads": 2, "d_model": 16, "d_ff": 32}
    save_checkpoint(tmp_path, GPT(GPTConfig(**config, dropout=0.0)))  # float16 on disk, as shipped
    full, served = load_model(tmp_path), keep_linears_in_float16(load_model(tmp_path))
    kept = [m for m in served.modules() if isinstance(m, Float16Linear)]
    assert len(kept) == 2 * 6 and all(m.weight.dtype == torch.float16 for m in kept)  # 4 projections + 2 FFN
    assert served.lm_head.weight is served.embed.weight  # the tied head stays one matrix
    idx = torch.randint(0, 11, (2, 30))  # past the context, through the sliding window
    assert torch.equal(served(idx).logits, full(idx).logits)  # bit for bit, not merely close
    runs = decode_both_ways(served, [1, 2, 3], 60, 1.0, seed=4)
    assert torch.equal(runs[True][0], runs[False][0])
    fresh = GPT(GPTConfig(**config, dropout=0.0)).eval()
    fresh.load_state_dict(served.state_dict())  # the same names: state dicts stay interchangeable
    assert torch.equal(fresh(idx).logits, full(idx).logits)


def test_generate_tab_serves_float16_checkpoints_with_float16_matrices(tiny_checkpoint):
    from models.checkpoint import Float16Linear

    model, _ = get_model("generation")  # saved in float32 with weights float16 cannot hold: kept as they are
    assert not any(isinstance(m, Float16Linear) for m in model.modules())
    folder = tiny_checkpoint.parent.parent / "float16" / "generation"
    save_checkpoint(folder, load_model(tiny_checkpoint))  # float16 on disk, as the shipped checkpoints
    load_tokenizer(tiny_checkpoint).save(folder)
    os.environ["PLAYGROUND_CHECKPOINTS"] = str(folder.parent)  # the fixture's monkeypatch restores it
    model, _ = get_model("generation")
    assert sum(isinstance(m, Float16Linear) for m in model.modules()) == 6 * TINY_MODEL["n_layers"]
    assert not any(type(m) is torch.nn.Linear and m is not model.lm_head for m in model.modules())


def test_ceiling_counts_the_bytes_each_kind_of_matrix_streams():
    from bench.generation import weight_reading_ceiling
    from models.checkpoint import keep_linears_in_float16

    config = {"vocab_size": 11, "context_len": 8, "n_layers": 2, "n_heads": 2, "d_model": 256, "d_ff": 1024}
    full = GPT(GPTConfig(**config, dropout=0.0))
    with torch.no_grad():
        for param in full.parameters():
            param.copy_(param.half().float())
    ceiling = weight_reading_ceiling(full, repeats=3)
    assert ceiling["weights_mb"] == 6.3  # 2 x (4 x 256^2 + 2 x 256 x 1024) + 11 x 256 floats of 4 bytes
    assert ceiling["tokens_per_s"] == pytest.approx(1000 / ceiling["ms_per_token"], rel=0.02)
    halved = weight_reading_ceiling(keep_linears_in_float16(full), repeats=3)
    assert halved["weights_mb"] == 3.2  # the blocks' matrices in 2 bytes, the tied 11 x 256 head in 4


def test_the_fast_step_makes_fewer_tensor_calls_per_token_than_the_modules():
    from bench.generation import aten_calls_per_token

    model = GPT(GPTConfig(vocab_size=11, context_len=8, n_layers=2, n_heads=2, d_model=16, d_ff=32)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        fast, modules = aten_calls_per_token(FastDecoder(model), prompt), aten_calls_per_token(model, prompt)
        one_layer_more = aten_calls_per_token(
            GPT(GPTConfig(vocab_size=11, context_len=8, n_layers=3, n_heads=2, d_model=16, d_ff=32)).eval(), prompt
        )
    assert 0 < fast < modules
    assert one_layer_more > modules  # it counts the work of every layer
