"""The Train tab: the toy tasks, the RNNs, the live trainer's knobs, each preset's lesson (trained
here with a fixed seed and a step budget), and `/train_live` through gradio_client: it streams,
it stops when cancelled, it refuses bad input and a second trainer with a sentence."""

from __future__ import annotations

import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch
from gradio_client import Client

from demos import train_live
from demos.train_live import PRESETS
from models.attention import MultiHeadAttention, scaled_dot_product_attention
from models.live_training import LiveRun, Settings, set_attention_knobs
from models.rnn import RNNConfig, Seq2SeqRNN
from models.toy_tasks import EOS, SEQ2SEQ_TASKS, TextTask, balanced, is_validation
from models.transformer import EncoderDecoder, EncoderDecoderConfig
from tests import lessons as lessons_worker

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


def test_memory_holds_a_bounded_number_of_runs():
    sessions = [train_live._session_for(None, Settings(task="copy", width=16, heads=2))[0] for _ in range(10)]
    kept = [s.run is not None for s in sessions]
    assert kept == [False] * 2 + [True] * 8 and train_live.RUNS_KEPT == 8


def test_pause_stops_the_stream_and_play_resumes_the_same_run():
    """In-process: the handler's own logic, without a server (request=None)."""
    args = knobs(seconds=30)[:-2]
    stream = train_live.train_live(*args, 30, "cross", None)
    session, status, *_ = next(stream)
    steps = steps_in(status)
    train_live.pause(session)
    with pytest.raises(StopIteration):  # a newer press exists: the stream ends at the next slice
        next(stream)
    run = session.run
    session, status, *_ = next(train_live.train_live(*args, 1, "cross", session))
    assert session.run is run and steps_in(status) > steps  # the same run went on
    session, status, *_ = train_live.train_step(*args, "cross", session)
    assert session.run is run
    changed = knobs(seconds=1, layers=1)[:-2]
    session, status, *_ = next(train_live.train_live(*changed, 1, "cross", session))
    assert session.run is not run and status.startswith("A new run started.")
    assert train_live.reset(session)[0].run is None and not train_live._running  # no slot left behind


def preset(start: str):
    return next(p for p in PRESETS if p.name.startswith(start))


# Each lesson trains with its change and without it (the contrast): nine runs on one thread each,
# trained two at a time in worker processes (tests/lessons.py), longest first.
LESSON_RUNS = {
    "reverse": ("Reverse, with positions", {"rnn": "none"}),  # transformer alone, 30% sooner (same run: test below)
    "bag": ("Reverse, no positional", {}),
    "unscaled": ("No sqrt(d_k)", {}),
    "scaled": ("No sqrt(d_k)", {"contrast": True}),
    "cold": ("No warmup", {}),
    "warm": ("No warmup", {"contrast": True}),
    "smoothed": ("Label smoothing", {}),
    "plain": ("Label smoothing", {"contrast": True}),
    "sort": ("Reverse, no positional", {"task": "sort", "steps": 400}),  # 72-73% at 400 (seeds 0-2)
}


@pytest.fixture(scope="module")
def lessons():
    """name -> a call that waits for that run and returns `tests.lessons.train`'s result."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked thread pools
    pool = ProcessPoolExecutor(max_workers=2, mp_context=context)
    futures = {}
    for name, (start, more) in LESSON_RUNS.items():
        p, more = preset(start), dict(more)
        steps = more.pop("steps", p.steps)
        futures[name] = pool.submit(lessons_worker.train, p.settings(**more), steps)
    yield {name: future.result for name, future in futures.items()}
    pool.shutdown(cancel_futures=True)  # runs no selected test waits for are not started


def test_without_the_scaling_wide_heads_start_saturated():
    """Before any training: with 1/sqrt(d_k) the attention is spread, without it nearly one-hot."""
    p = preset("No sqrt(d_k)")
    peaks = {}
    for contrast in (False, True):
        run = LiveRun(p.settings(contrast=contrast))
        weights = run.attention_maps()["encoder self"][0]
        peaks[contrast] = float(weights.max(-1).mean())
    assert peaks[False] > 0.8 and peaks[True] < 0.5, peaks


def test_the_rnn_beside_it_leaves_the_transformers_run_unchanged():
    """The models share only the batches (no dropout, full teacher forcing, seeded before the
    transformer is built), so a preset's lesson about the transformer can be trained without its RNN."""
    p = preset("Reverse, with positions")
    assert p.settings().rnn != "none"
    runs = [LiveRun(p.settings(**more)) for more in ({}, {"rnn": "none"})]
    for run in runs:
        run.train_for(1e9, max_steps=25)
    with_rnn, alone = (run.learners[0] for run in runs)
    assert with_rnn.recent_losses == alone.recent_losses and len(alone.recent_losses) == 25
    assert all(torch.equal(a, b) for a, b in zip(with_rnn.model.parameters(), alone.model.parameters(), strict=True))


@pytest.mark.slow
def test_reverse_learns_with_positions_and_its_cross_attention_is_the_anti_diagonal(lessons):
    run = lessons["reverse"]()
    assert run["last"].val_accuracy >= 0.95
    weights, queries, keys = run["attention"]["cross"]
    n = len(keys)
    anti_diagonal = weights[:, :, range(n), range(n - 1, -1, -1)].mean(-1)  # (layers, heads)
    assert anti_diagonal.max() > 0.6, anti_diagonal  # some head reads input n-1-i for output i
    both = LiveRun(preset("Reverse, with positions").settings())  # untrained: the count is the models' shape
    transformer, gru = both.learners
    assert both.sequential_steps(gru) == 2 * n + 1 > both.sequential_steps(transformer) == 4


@pytest.mark.slow
def test_reverse_without_positions_stays_low(lessons):
    bag = lessons["bag"]()["last"]
    assert bag.val_accuracy <= 0.25 and bag.val_loss > 0.5  # with positions: 98%, loss 0.01 (bench)
    sort = lessons["sort"]()["last"]
    assert sort.val_accuracy >= 0.5  # sorting needs no order: a bag of letters is enough


@pytest.mark.slow
def test_without_the_scaling_training_stalls(lessons):
    stalled, scaled = (lessons[name]()["last"] for name in ("unscaled", "scaled"))
    assert stalled.val_loss > scaled.val_loss + 0.5 and scaled.val_accuracy > stalled.val_accuracy + 0.2


@pytest.mark.slow
def test_without_warmup_a_high_learning_rate_crawls(lessons):
    cold, warm = (lessons[name]()["last"] for name in ("cold", "warm"))
    assert cold.val_loss > warm.val_loss + 0.5 and warm.val_accuracy > cold.val_accuracy + 0.3


@pytest.mark.slow
def test_label_smoothing_brings_confidence_closer_to_accuracy(lessons):
    smoothed, plain = (lessons[name]()["calibration"] for name in ("smoothed", "plain"))
    assert smoothed["ece"] < plain["ece"], (smoothed, plain)


# ----------------------------------------------------------------------------------------------
# /train_live through gradio_client, on `python app.py`
# ----------------------------------------------------------------------------------------------


def knobs(seconds: float = 20, **changes) -> tuple:
    """/train_live's inputs in order (reverse, 2 layers, 4 heads, width 64, no RNN)."""
    k = {"task": "reverse", "text": "", "layers": 2, "heads": 4, "width": 64, "positional": "sinusoidal",
         "scaled": True, "causal": True, "norm": "pre-norm", "lr": 3e-3, "warmup": 100, "label_smoothing": 0.0,
         "dropout": 0.0, "teacher_forcing": 1.0, "rnn": "none", "seed": 0, "seconds": seconds,
         "view": "cross"}  # fmt: skip
    k.update(changes)
    return tuple(k.values())


def steps_in(status: str) -> int:
    return int(next(row for row in status.splitlines() if row.startswith("| steps |")).split("|")[2])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def wait_for(condition, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"not within {timeout:.0f} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(app_server):
    return app_server  # the Train tab frees its one training slot when a stream ends (or after STALE_S)


@pytest.mark.slow
def test_a_run_streams_updates_and_stops_when_cancelled(server):
    client = Client(server.url, verbose=False)
    job = client.submit(*knobs(seconds=45), api_name="/train_live")
    wait_for(lambda: len(job.outputs()) >= 3, timeout=120)
    updates = job.outputs()
    status, curves, attention, samples, heldout = updates[-1]
    assert steps_in(updates[0][0]) < steps_in(status)  # it trains between updates
    assert len(attention["plot"]) > 1000 and "layer 2 head 4" in attention["plot"]
    assert samples["headers"][:2] == ["input", "target"] and heldout["headers"] == ["length", "transformer"]
    before = cpu_seconds(server.process.pid)
    time.sleep(3)
    training_cpu = cpu_seconds(server.process.pid) - before
    job.cancel()
    wait_for(job.done, timeout=30)
    time.sleep(3)  # the slice that was running finishes
    before = cpu_seconds(server.process.pid)
    time.sleep(3)
    idle_cpu = cpu_seconds(server.process.pid) - before
    assert idle_cpu < 0.25 * training_cpu, (idle_cpu, training_cpu)
    # Play again continues the same run where it stopped (the session keeps it)
    again = client.submit(*knobs(seconds=2), api_name="/train_live")
    assert steps_in(again.result(timeout=120)[0]) > steps_in(status)


@pytest.mark.slow
def test_one_trainer_at_a_time_and_bad_inputs_get_sentences(server):
    first, second = Client(server.url, verbose=False), Client(server.url, verbose=False)
    job = first.submit(*knobs(seconds=30), api_name="/train_live")
    wait_for(lambda: len(job.outputs()) >= 1, timeout=120)
    with pytest.raises(Exception, match="Someone else is training right now"):
        second.predict(*knobs(seconds=5), api_name="/train_live")
    job.cancel()
    for changes, message in [
        ({"layers": 9}, "Value 9 is greater than maximum value 4"),  # Gradio's own slider check
        ({"seconds": 600}, "greater than maximum value 60"),
        ({"width": 48, "heads": 5}, "must split into 5 heads of an even size"),
        ({"positional": "absolute"}, "absolute"),
        ({"lr": 0}, "Value 0 is less than minimum value 1e-05"),
        ({"task": "text", "text": "Too short to learn from."}, "The text is too short"),
    ]:
        with pytest.raises(Exception, match=message):
            first.predict(*knobs(**changes), api_name="/train_live")
