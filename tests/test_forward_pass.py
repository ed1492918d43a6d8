"""The Forward Pass tab: models/introspect.py against the models' own forward passes, the
walkthrough's sampling against models/decoding.py, every generated character's distribution
against the model, bad input, the time to render, and the endpoints through gradio_client."""

from __future__ import annotations

import json
import statistics
import time

import pytest
import torch
from gradio_client import Client

from demos import explain, generation
from demos import forward_pass as fp
from demos.common import get_model, has_checkpoint
from models.checkpoint import build_model
from models.decoding import filter_logits, sample
from models.introspect import AttentionTrace, FeedForwardTrace, trace_decoder, trace_gpt

PROMPT_128 = (
    "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious"
)[:128]
TOL = 1e-5

needs_generation = pytest.mark.skipif(not has_checkpoint("generation"), reason="no generation checkpoint")
needs_translation = pytest.mark.skipif(not has_checkpoint("translation"), reason="no translation checkpoint")


def check_trace_against_forward(trace, out, norm_first: bool) -> None:
    """Logits, attention, the logit lens and (pre-norm) the residual stream's parts."""
    torch.testing.assert_close(trace.logits, out.logits[0], atol=TOL, rtol=0)
    torch.testing.assert_close(trace.lens_logits[-1], out.logits[0], atol=TOL, rtol=0)
    self_attention = [layer[0].weights for layer in trace.layers]
    for mine, theirs in zip(self_attention, out.attentions[-len(self_attention) :], strict=True):
        torch.testing.assert_close(mine, theirs["self"][0], atol=TOL, rtol=0)
    if norm_first:
        torch.testing.assert_close(trace.stream_sum(), trace.final_hidden, atol=TOL, rtol=0)
    for layer in trace.layers:
        assert isinstance(layer[0], AttentionTrace) and isinstance(layer[-1], FeedForwardTrace)
        for sub in layer:
            expected = sub.before + sub.output if sub.norm_first else None
            if expected is not None:
                torch.testing.assert_close(sub.after, expected)


@needs_generation
def test_gpt_trace_equals_the_models_forward_pass():
    model, tokenizer = get_model("generation")
    ids = tokenizer.encode(PROMPT_128)
    trace = trace_gpt(model, ids)
    out = model(torch.tensor([ids]), need_weights=True)
    check_trace_against_forward(trace, out, model.config.norm_first)
    # the fused kernel (no weights asked) gives the same logits too
    torch.testing.assert_close(trace.logits, model(torch.tensor([ids])).logits[0], atol=1e-4, rtol=0)
    assert trace.position_embedding is None and trace.layers[0][0].q_rotated is not None  # RoPE
    # the lens after layer 1 is not already the answer (the test would pass trivially otherwise)
    assert (trace.lens_logits[1] - trace.logits).abs().max() > 0.1


@pytest.mark.parametrize(
    "config",
    [
        {"n_layers": 3, "n_heads": 2, "d_model": 32, "d_ff": 64, "positional": "learned", "context_len": 40},
        {"n_layers": 1, "n_heads": 4, "d_model": 48, "d_ff": 96, "positional": "sinusoidal", "bias": True},
        {"n_layers": 2, "n_heads": 2, "d_model": 16, "d_ff": 32, "positional": "rope", "norm_first": False},
        {
            "n_layers": 2,
            "n_heads": 2,
            "d_model": 16,
            "d_ff": 32,
            "positional": "rope",
            "qk_norm": True,
            "activation": "relu2",
            "tie_weights": False,
        },
    ],
)
def test_trace_works_for_any_gpt_the_loader_builds(config):
    torch.manual_seed(0)
    model = build_model("gpt", {"vocab_size": 30, "dropout": 0.0, **config}).eval()
    for p in model.parameters():  # untrained weights are tiny: make the layers matter
        p.data.normal_(0, 0.3)
    ids = torch.randint(0, 30, (25,)).tolist()
    trace = trace_gpt(model, ids)
    check_trace_against_forward(trace, model(torch.tensor([ids]), need_weights=True), model.config.norm_first)
    assert len(trace.layers) == config["n_layers"]
    assert (trace.position_embedding is None) == (config["positional"] == "rope")
    walk_steps = fp.views.walkthrough_steps(trace)
    per_layer = 7 if model.config.norm_first else 5
    assert len(walk_steps) == 1 + per_layer * config["n_layers"] + 5
    # the feed-forward view names and draws the activation the model really uses
    ff = trace.layers[0][1]
    assert ff.activation == config.get("activation", "gelu")
    curve = fp.views.activation_figure(ff, 3).data[0]
    x = torch.tensor(curve.x)
    expected = {"gelu": torch.nn.functional.gelu(x), "relu": torch.relu(x), "relu2": torch.relu(x) ** 2}
    torch.testing.assert_close(torch.tensor(curve.y), expected[ff.activation])
    written = {"gelu": "GELU", "relu": "ReLU", "relu2": "ReLU²"}[ff.activation]
    assert f"feed-forward ({written})" in fp.views.diagram_html(trace, walk_steps, 0)
    assert written in fp.views.activation_figure(ff, 3).layout.title.text
    # the Q, K, V step says QK-norm exactly when the model has it, and shows the normed queries
    attention = trace.layers[0][0]
    assert attention.qk_norm == config.get("qk_norm", False)
    if attention.qk_norm:
        gains = model.layers[0].self_attn.q_norm.weight
        rms = (attention.q / gains).pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)


@needs_translation
def test_decoder_trace_equals_the_models_forward_pass_with_cross_attention():
    model, tokenizer = get_model("translation")
    source = tokenizer.encode("Two dogs run across a green field.").ids + [2]
    target = [tokenizer.token_to_id("<2de>")] + tokenizer.encode("Zwei Hunde laufen").ids
    trace = trace_decoder(model, source, target)
    out = model(torch.tensor([source]), torch.tensor([target]), need_weights=True)
    check_trace_against_forward(trace, out, model.config.norm_first)
    crosses = [layer[1] for layer in trace.layers]
    for mine, theirs in zip(crosses, [a["cross"] for a in out.attentions if a.get("cross") is not None], strict=True):
        assert mine.kind == "cross-attention"
        torch.testing.assert_close(mine.weights, theirs[0], atol=TOL, rtol=0)
        assert mine.weights.shape[-1] == len(source)


@needs_generation
def test_walkthrough_samples_what_the_sampler_samples():
    model, tokenizer = get_model("generation")
    text, position = "KING HENRY:\nWhat say", 14
    walk = fp.forward_pass("generation", text, position, temperature=0.9, top_k=8, top_p=0.9, seed=5)
    ids = tokenizer.encode(text)[: position + 1]
    logits = model(torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(walk.probs, filter_logits(logits, 0.9, 8, 0.9), atol=TOL, rtol=0)
    assert int((walk.probs > 0).sum()) <= 8
    drawn = next(sample(model, torch.tensor([ids]), 1, 0.9, 8, 0.9, generator=torch.Generator().manual_seed(5)))
    assert walk.sampled == int(drawn[0]) and walk.probs[walk.sampled] > 0
    assert walk.next_token == tokenizer.encode(text)[position + 1]
    # the temperature step: softmax(logits / T)
    torch.testing.assert_close(walk.tempered, (logits / 0.9).softmax(-1), atol=TOL, rtol=0)


@needs_generation
def test_every_step_renders_and_the_diagram_lights_one_box():
    walk = fp.forward_pass("generation", "ROMEO:\nBut soft", 5)
    keys = [step.key for step in walk.steps]
    assert keys[0] == "embed" and keys[-5:] == ["final_norm", "logits", "temperature", "cut", "sample"]
    assert keys[1:8] == ["norm", "qkv", "attention", "add", "norm", "ffn", "add"]
    for number, step in enumerate(walk.steps, start=1):
        diagram, text, figure = fp.render_step(walk, number)
        assert diagram.count('stroke-width="3"') == 1, step.title  # the current box, and only it
        assert f"Step <b>{number}</b> of {len(walk.steps)}" in diagram
        assert text.startswith(f"### {step.title}") and figure.data
    # real numbers: the feed-forward step's table shows the hidden units the trace holds
    ffn = next(i for i, s in enumerate(walk.steps, start=1) if s.key == "ffn")
    _, text, figure = fp.render_step(walk, ffn)
    hidden = walk.trace.layers[0][1].hidden[5]
    assert f"{float(hidden[0]):.3f}" in text
    assert figure.data[1].x == tuple(hidden.tolist())
    _, text, _ = fp.render_step(walk, keys.index("qkv") + 1)
    assert ("QK-norm" in text) == walk.trace.layers[0][0].qk_norm


@needs_generation
def test_next_and_previous_step_buttons_move_one_step_and_stop_at_the_ends():
    settings = ("generation", "ROMEO:\nBut soft", "en→de", 4)
    sampling = (0.8, 0, 1.0, 0)
    step, diagram, text, *_ = fp._on_move(1, *settings, 3, *sampling)
    assert step == 4 and "Step <b>4</b> of 34" in diagram and text.startswith("### Layer 1: self-attention")
    step, diagram, *_ = fp._on_move(-1, *settings, 1, *sampling)
    assert step == 1 and "Step <b>1</b>" in diagram
    step, diagram, text, *_ = fp._on_move(1, *settings, 34, *sampling)
    assert step == 34 and text.startswith("### The sampled token")


@needs_translation
def test_translation_walkthrough_has_cross_attention_over_the_source():
    walk = fp.forward_pass("translation", "A man is riding a bike.", 1, direction="en→de")
    assert walk.labels[0] == "<2de>" and walk.source_labels[-1] == "</s>"
    cross = [s for s in walk.steps if s.key == "attention" and "cross" in s.title]
    assert len(cross) == walk.trace.n_layers
    _, text, figure = fp.render_step(walk, walk.steps.index(cross[0]) + 1)
    assert "cross-attention" in text and len(figure.data[0].x) == len(walk.source_labels)
    # greedy translation: the position's most likely next token is the one the decoder input holds next
    assert int(walk.trace.logits[1].argmax()) == walk.next_token


@needs_generation
def test_logit_lens_and_residual_stream_views():
    walk = fp.forward_pass("generation", "ROMEO:\nBut soft", 10)
    rows = fp.views.lens_rows(walk.trace, 10, walk.label, walk.next_token)
    assert [r[0] for r in rows] == ["embedding"] + [f"after layer {i + 1}" for i in range(walk.trace.n_layers)]
    top = walk.label(int(walk.trace.logits[10].argmax()))
    assert rows[-1][1].startswith(top + " ")  # the last read-out is the model's own prediction
    figure = fp.views.stream_figure(walk.trace, 10, "10")
    ffn_norms = figure.data[1].y
    stages = ["embedding"] + [f"layer {i + 1}" for i in range(walk.trace.n_layers)]
    assert list(figure.layout.xaxis.categoryarray) == stages  # the stream read left to right, input first
    assert ffn_norms[0] == pytest.approx(float(walk.trace.layers[0][1].output[10].norm()))


def test_the_drawn_token_is_marked_apart_from_the_series_colours():
    plain = torch.tensor([0.1, 0.5, 0.4])
    cut = torch.tensor([0.0, 0.6, 0.4])
    figure = fp.views.probability_figure([("T = 1", plain), ("after the cut", cut)], "abc".__getitem__, "", highlight=2)
    assert [bar.x for bar in figure.data] == [("b", "c", "a")] * 2  # best of the last series first
    (mark,) = figure.layout.annotations
    assert (mark.x, mark.y, mark.text) == ("c", pytest.approx(0.4), "drawn")
    colours = [bar.marker.color for bar in figure.data]
    assert len(set(colours)) == 2 and mark.font.color not in colours  # the mark's red is no series' colour
    assert figure.layout.yaxis.range[1] > 0.6  # room above the tallest bar


@needs_generation
def test_every_generated_character_has_the_samplers_distribution():
    model, _ = get_model("generation")
    args = ("JULIET:\nO Romeo", 60, 0.8, 20, 0.95, 11)
    explanation = explain.explain_generation(*args)
    text = list(generation.generate(*args))[-1].text  # the Generate tab, same settings and seed
    assert "".join(explanation.chars) == text
    context = explanation.prompt_ids + explanation.ids
    for i, token in enumerate(explanation.ids):
        window = context[: len(explanation.prompt_ids) + i]
        logits = model(torch.tensor([window])).logits[0, -1]
        torch.testing.assert_close(explanation.probs[i], filter_logits(logits, 0.8, 20, 0.95), atol=TOL, rtol=0)
        assert explanation.chosen[i] == pytest.approx(float(explanation.probs[i, token]))
        assert explanation.chosen[i] > 0  # nothing was drawn from outside the cut
    view = explain.explain_character(explanation, 7)
    assert torch.equal(view.probs, explanation.probs[7])
    assert f"{explanation.chosen[7]:.1%}" in view.markdown
    weights, keys = explain.character_attention(explanation, 7)
    assert len(keys) == len(explanation.prompt_ids) + 7
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


@needs_generation
def test_characters_past_the_context_are_explained_by_the_cached_run():
    """Past 128 characters the sampler's KV cache slides; its logits still equal the model's
    forward over the whole text (a RoPE GPT reads it through the sliding window), and the
    attention shown covers exactly the last context_len keys."""
    model, _ = get_model("generation")
    explanation = explain.explain_generation("ROMEO:\n" + "O " * 60, 80, 1.0, 0, 1.0, 4)
    text = explanation.prompt_ids + explanation.ids
    last = len(explanation.ids) - 1
    assert len(text) - 1 > model.context_len
    logits = model(torch.tensor([text[:-1]])).logits[0, -1]
    torch.testing.assert_close(explanation.probs[last], filter_logits(logits, 1.0), atol=1e-4, rtol=0)
    weights, keys = explain.character_attention(explanation, last)
    assert weights.shape[-1] == len(keys) == model.context_len
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


@needs_generation
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fp.forward_pass("generation", ""), "Type a prompt first"),
        (lambda: fp.forward_pass("generation", "x" * 129), "at most 128"),
        (lambda: fp.forward_pass("generation", "ROMEO", 5), "positions 0 to 4"),
        (lambda: fp.forward_pass("generation", "ROMEO", -1), "out of range"),
        (lambda: fp.forward_pass("generation", "ROMEO", "two"), "out of range"),
        (lambda: fp.forward_pass("a llama", "ROMEO"), "Pick a model"),
        (lambda: fp.forward_pass("generation", "ROMEO", temperature="hot"), "Temperature must be a number"),
        (lambda: fp.render_step(fp.forward_pass("generation", "ROMEO"), 99), "steps 1 to 34"),
        (lambda: fp.forward_pass("translation", "   "), "Type a sentence first"),
        (lambda: fp.forward_pass("translation", "A dog.", direction="de→fr"), "Pick a direction"),
        (lambda: fp.forward_pass("translation", "A dog.", 40), "out of range"),
        (lambda: explain.explain_character(explain.explain_generation("ROMEO", 5), 5), "numbered 0 to 4"),
        (lambda: explain.explain_generation("ROMEO", 5, seed=-3), "seed must be a whole number"),
    ],
)
def test_bad_input_gets_a_clear_message(call, message):
    with pytest.raises(fp.UserError, match=message):
        call()


@needs_generation
def test_renders_a_128_character_prompt_within_a_second():
    """Everything the tab shows for one request (trace, sampling, step, residual stream, logit lens)."""
    fp.outputs("generation", PROMPT_128, "en→de", None, 1, 0.8, 0, 1.0, 0)  # warm up plotly
    times = []
    for step in (1, 7, 25, 34):
        start = time.perf_counter()
        fp.outputs("generation", PROMPT_128, "en→de", None, step, 0.8, 0, 1.0, 0)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 2.0, f"{times} (target 1 s on 2 idle cores; generous on a shared machine)"


# ----------------------------------------------------------------------------------------------
# Through the running app
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(request):
    if not (has_checkpoint("generation") and has_checkpoint("translation")):
        pytest.skip("needs the shipped generation and translation checkpoints")
    return Client(request.getfixturevalue("app_server").url, verbose=False)


def plot_json(value: dict) -> dict:
    assert value["type"] == "plotly"
    return json.loads(value["plot"])


@pytest.mark.slow
def test_forward_pass_endpoint(client):
    args = ("generation", "ROMEO:\nBut soft", "en→de", 9, 4, 0.8, 0, 1.0, 0)
    diagram, text, figure, stream, lens, summary = client.predict(*args, api_name="/forward_pass")
    walk = fp.forward_pass("generation", "ROMEO:\nBut soft", 9)
    assert "Step <b>4</b> of 34" in diagram and text.startswith("### Layer 1: self-attention")
    heat = plot_json(figure)["data"][0]
    assert len(heat["x"]) == 10  # position 9 sees keys 0..9
    assert [row[0] for row in lens["data"]] == [
        "embedding",
        "after layer 1",
        "after layer 2",
        "after layer 3",
        "after layer 4",
    ]
    assert lens["data"][-1][1].startswith(walk.label(int(walk.trace.logits[9].argmax())) + " ")
    assert "Position **9**" in summary and plot_json(stream)["data"]
    _, text, *_ = client.predict("translation", "A dog runs.", "en→fr", 1, 8, 0.8, 0, 1.0, 0, api_name="/forward_pass")
    assert "cross-attention" in text
    with pytest.raises(Exception, match="out of range"):
        client.predict("generation", "ROMEO", "en→de", 12, 1, 0.8, 0, 1.0, 0, api_name="/forward_pass")


@pytest.mark.slow
def test_explain_generation_endpoints(client):
    settings = ("ROMEO:\n", 40, 0.8, 0, 1.0, 2)
    text, summary, index, detail, distribution, attention = client.predict(*settings, api_name="/explain_generation")
    explanation = explain.explain_generation(*settings)
    assert "".join(token["token"] for token in text) == "".join(explanation.chars)
    assert [token["class_or_confidence"] for token in text] == [round(p, 4) for p in explanation.chosen]
    assert index == 0 and "Character 0" in detail and "Click a character" in summary
    detail, distribution, attention = client.predict(*settings, 5, api_name="/explain_character")
    assert f"{explanation.chosen[5]:.1%}" in detail
    bars = plot_json(distribution)["data"][-1]  # what the character was drawn from
    top = explanation.probs[5].topk(10).values.tolist()
    assert bars["y"][:10] == pytest.approx(top, abs=1e-6)
    assert len(plot_json(attention)["data"][0]["y"]) == 4  # one row per layer
    with pytest.raises(Exception, match="numbered 0 to 39"):
        client.predict(*settings, 40, api_name="/explain_character")
    with pytest.raises(Exception, match="seed must be a whole number"):
        client.predict("ROMEO", 10, 0.8, 0, 1.0, 1.5, api_name="/explain_generation")


@pytest.fixture(scope="module")
def browser_tab(request):
    """test_browser.py's Chromium set-up (imported here: that module skips itself without Chromium)."""
    if not (has_checkpoint("generation") and has_checkpoint("translation")):
        pytest.skip("needs the shipped generation and translation checkpoints")
    from tests import test_browser as setup

    server = request.getfixturevalue("app_server")
    with (
        setup.sync_api.sync_playwright() as playwright,
        setup.browser_page(playwright, server.url) as page,
    ):
        yield page, setup


@pytest.mark.browser
@pytest.mark.slow
def test_browser_steps_through_the_block_and_clicks_a_generated_character(browser_tab):
    page, setup = browser_tab
    panel = setup.open_tab(page, fp.TITLE)
    diagram = panel.locator(".forward-diagram")
    diagram.get_by_text("Step 1 of 34").wait_for()
    panel.get_by_role("button", name="Next step ▶").click()
    diagram.get_by_text("Step 2 of 34: Layer 1: LayerNorm").wait_for()
    panel.get_by_role("button", name="Next step ▶").click()
    diagram.get_by_text("Step 3 of 34: Layer 1: Q, K, V").wait_for()
    panel.get_by_text("RoPE").first.wait_for()
    setup.screenshot(page, "forward_pass")
    panel.get_by_role("button", name="Generate and explain").click()
    characters = panel.get_by_test_id("highlighted-text:textfield").locator(".token-container")
    characters.nth(20).wait_for()
    expected = explain.explain_generation("ROMEO:\n", 120, 0.8, 0, 1.0, 0)  # the section's defaults
    assert characters.count() == len(expected.chars)
    assert characters.nth(12).inner_text() == expected.chars[12]
    characters.nth(12).click()
    detail = panel.locator("p").filter(has_text="Character 12:")
    detail.wait_for()
    assert f"{expected.chosen[12]:.1%}" in detail.inner_text()
