"""The Attention Maps and Attention Lab tabs: every map's shape and labels, the Lab's numbers against
models.attention, masks and scaling, missing checkpoints, and the 1-second render budget."""

from __future__ import annotations

import io
import json
import math
import time

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from bench import attention as attention_bench
from demos import attention_lab as lab
from demos import attention_maps as maps
from demos import efficiency, lab_figures, registry
from demos import model_view as mv
from demos.common import MissingCheckpoint
from demos.plots import attention_heatmap, char_label, plot_labels
from models.analysis import attention_entropy
from models.attention import MultiHeadAttention
from models.checkpoint import save_checkpoint
from models.positional import sinusoidal_table
from models.schedules import noam_lr
from models.tokenizers import CharTokenizer
from models.transformer import GPT, EncoderDecoder, EncoderDecoderConfig, GPTConfig

SHAKESPEARE = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east."
SENTENCES = [
    "A little girl is climbing into a wooden playhouse.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Une petite fille grimpe dans une maison de jeu en bois.",
]


def save_gpt(folder, n_layers=2, n_heads=2, d_model=16, context_len=128, seed=0):
    """A tiny random GPT with a character tokenizer, as the generation tab ships it."""
    tokenizer = CharTokenizer.from_text(SHAKESPEARE)
    torch.manual_seed(seed)
    config = GPTConfig(tokenizer.vocab_size, context_len, n_layers, n_heads, d_model, 2 * d_model, dropout=0.0)
    save_checkpoint(folder / "generation", GPT(config))
    tokenizer.save(folder / "generation")


def save_all(folder):
    """Tiny random checkpoints of all four tasks."""
    from models.audio import AudioConfig, AudioTransformer
    from models.translation import train_tokenizer
    from models.vision import VisionClassifier, ViTConfig

    save_gpt(folder)
    tokenizer = train_tokenizer(SENTENCES * 10, 120)
    torch.manual_seed(0)
    config = EncoderDecoderConfig(tokenizer.get_vocab_size(), 32, 2, 3, 2, 16, 32, dropout=0.0)
    save_checkpoint(folder / "translation", EncoderDecoder(config))
    tokenizer.save(str(folder / "translation" / "tokenizer.json"))
    save_checkpoint(folder / "vision", VisionClassifier(ViTConfig(patch_size=8, embed_dim=16, depth=2, num_heads=2)))
    save_checkpoint(folder / "audio", AudioTransformer(AudioConfig(d_model=16, n_layers=3, n_heads=2, d_ff=32)))


@pytest.fixture(scope="module")
def all_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    save_all(folder)
    return folder


@pytest.fixture
def with_all(monkeypatch, all_checkpoints):
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(all_checkpoints))
    return all_checkpoints


def an_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


def a_recording(seconds=0.6, rate=16000) -> tuple[int, np.ndarray]:
    t = np.arange(int(seconds * rate)) / rate
    return rate, (0.3 * np.sin(2 * np.pi * 300 * t) * np.hanning(len(t))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Attention Maps
# ----------------------------------------------------------------------------------------------


def test_generation_map_labels_shapes_and_causality(with_all):
    text = "But soft, what light"
    result = maps.attention_map("generation", "causal self", "2", "1", text=text)
    a = result.attention
    assert a.weights.shape == (2, 2, len(text), len(text))
    assert a.query_labels == a.key_labels == [char_label(c) for c in text]
    np.testing.assert_allclose(a.weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(a.weights, k=1) == 0)  # causal: no weight on later characters
    np.testing.assert_array_equal(result.values, a.weights[1, 0])
    heatmap = result.figure.data[0]
    assert list(heatmap.y) == plot_labels(a.query_labels) and list(heatmap.x) == plot_labels(a.key_labels)
    assert np.asarray(heatmap.z).shape == (len(text), len(text))
    assert len(result.summary) == 2 * 2


@pytest.mark.parametrize(
    ("kind", "queries", "keys"),
    [("encoder self", "src", "src"), ("decoder self", "tgt", "read"), ("cross", "tgt", "src")],
)
def test_translation_maps_have_source_and_target_axes(with_all, kind, queries, keys):
    from demos.common import get_model

    result = maps.attention_map("translation", kind, text=SENTENCES[0], target="de")
    a = result.attention
    _, tokenizer = get_model("translation")
    src = [tokenizer.id_to_token(i) for i in tokenizer.encode(SENTENCES[0]).ids] + ["</s>"]
    decoder = maps.compute_attention("translation", "decoder self", text=SENTENCES[0], target="de")
    read, written = decoder.key_labels, decoder.query_labels
    assert read[0] == "<2de>"  # the decoder starts with the target language's token
    assert written[-1] == "</s>" and written[:-1] == read[1:]  # each row writes the next piece
    labels = {"src": src, "tgt": written, "read": read}
    assert a.query_labels == labels[queries] and a.key_labels == labels[keys]
    layers = 2 if kind == "encoder self" else 3
    assert a.weights.shape == (layers, 2, len(a.query_labels), len(a.key_labels))
    assert result.values.shape == (len(a.query_labels), len(a.key_labels))
    if kind == "decoder self":
        assert np.all(np.triu(a.weights, k=1) == 0)


def test_vision_maps_cover_the_patch_grid(with_all):
    result = maps.attention_map("vision", "CLS to patches", "1", "2", image=an_image())
    a = result.attention
    assert a.patch_grid == (4, 4) and a.image.shape == (32, 32, 3)
    assert a.query_labels[0] == "CLS" and len(a.key_labels) == 1 + 16
    assert a.weights.shape == (2, 2, 17, 17)
    overlay = result.figure.data[1]
    np.testing.assert_allclose(np.asarray(overlay.z), a.weights[0, 1, 0, 1:].reshape(4, 4))
    rollout = maps.attention_map("vision", "rollout", image=an_image())
    assert rollout.attention.weights.shape == (2, 1, 17, 17)
    np.testing.assert_allclose(rollout.attention.weights.sum(-1), 1.0, atol=1e-5)


def test_audio_maps_are_strips_over_time(with_all):
    result = maps.attention_map("audio", "CLS to frames", "3", "average", audio=a_recording())
    a = result.attention
    n = len(a.key_labels) - 1
    assert a.weights.shape == (3, 2, n + 1, n + 1) and len(a.key_times) == n
    assert np.all(np.diff(a.key_times) > 0)
    np.testing.assert_allclose(mv.tile_values(a, result.values), a.weights[2].mean(0)[None, 0, 1:], rtol=1e-6)
    strip = result.figure.data[-1]
    assert np.asarray(strip.z).shape == (1, n)


def test_average_means_the_mean_over_layers_and_heads(with_all):
    a = maps.compute_attention("generation", "causal self", text="soft light")
    np.testing.assert_allclose(maps.select(a, None, None), a.weights.mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(maps.select(a, 1, None), a.weights[1].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="Layer 3 does not exist"):
        maps.attention_map("generation", "causal self", "3", "1", text="soft light")


def test_clicking_a_tile_of_the_model_view_picks_its_layer_and_head(with_all):
    a = maps.compute_attention("generation", "causal self", text="what light")
    view = mv.model_view(a, (1, 0))
    th, tw = mv._tile_size(a)
    assert view.shape[:2] == (
        mv.LABEL_MARGIN + 2 * (th + mv.TILE_PAD),
        mv.LABEL_MARGIN + 2 * (tw + mv.TILE_PAD),
    )
    for layer in range(a.layers):
        for head in range(a.heads):
            y, x = mv._tile_origin(layer, head, th, tw)
            assert mv.tile_at(a, x + tw // 2, y + th // 2) == (layer, head)
    assert mv.tile_at(a, 2, 2) is None  # the label margin


def test_head_summary_tags_previous_first_and_same_token_heads():
    t = 6
    previous = np.eye(t, k=-1)
    previous[0, 0] = 1.0
    first = np.zeros((t, t))
    first[:, 0] = 1.0
    same = np.eye(t)
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    weights = np.stack([previous, first, same, uniform])[None].astype(np.float32)  # 1 layer, 4 heads
    labels = list("abcdef")
    a = maps.AttentionSet("generation", "causal self", weights, labels, labels)
    rows = mv.head_summary(a)
    assert [r["tag"] for r in rows] == ["previous token", "first token", "same token", ""]
    assert rows[2]["entropy (bits)"] == 0.0
    assert rows[3]["entropy (bits)"] == pytest.approx(np.mean([math.log2(i) for i in range(1, t + 1)]), abs=1e-3)
    assert rows[1]["most attended"].startswith("a (1.00)")


# ----------------------------------------------------------------------------------------------
# Attention Lab
# ----------------------------------------------------------------------------------------------


def _reference_attention(layer: lab.LabLayer) -> MultiHeadAttention:
    """A fresh MultiHeadAttention holding the lab layer's weights (float64)."""
    mha = layer.attention
    fresh = MultiHeadAttention(mha.n_heads * mha.head_dim, mha.n_heads, bias=mha.q_proj.bias is not None)
    fresh.rope = mha.rope
    fresh.double().load_state_dict(mha.state_dict())
    return fresh.eval()


@pytest.mark.parametrize("source", ["random", "generation", "translation"])
@pytest.mark.parametrize("mask", lab.MASKS)
def test_lab_numbers_equal_multihead_attention(with_all, source, mask):
    r = lab.attention_lab("the cat sat on the mat", source, mask, scaled=True, head=1)
    reference = _reference_attention(lab.lab_layer(source))
    x = r.x_attention[None]
    expected, expected_weights = reference(x, mask=r.mask, need_weights=True)
    torch.testing.assert_close(r.output, expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(r.weights, expected_weights[0], rtol=0, atol=1e-12)
    assert r.output.dtype == torch.float64 and r.reference_difference < 1e-12
    # the projections are X W^T + b, head h holding columns h*d_k .. (h+1)*d_k
    d_k = r.v.size(-1)
    v = x[0] @ reference.v_proj.weight.T + (reference.v_proj.bias if reference.v_proj.bias is not None else 0)
    for h in range(r.v.size(0)):
        torch.testing.assert_close(r.v[h], v[:, h * d_k : (h + 1) * d_k])
    torch.testing.assert_close(r.concatenated, torch.cat(list(r.head_outputs), dim=-1))


def test_lab_input_is_embedding_plus_sinusoidal_encoding():
    r = lab.attention_lab("the cat the", "random", "none")
    torch.testing.assert_close(r.positional, sinusoidal_table(3, lab.RANDOM_D_MODEL).double())
    torch.testing.assert_close(r.x, r.token_embeddings + r.positional)
    assert torch.equal(r.token_embeddings[0], r.token_embeddings[2])  # a word has one embedding...
    assert not torch.equal(r.x[0], r.x[2])  # ...and its position makes the two "the" differ
    again = lab.attention_lab("the dog", "random", "none")
    torch.testing.assert_close(again.token_embeddings[0], r.token_embeddings[0])


@pytest.mark.parametrize("source", ["random", "generation"])
def test_switching_scaling_off_saturates_the_softmax(with_all, source):
    on = lab.attention_lab("the cat sat on the mat", source, "none", scaled=True)
    off = lab.attention_lab("the cat sat on the mat", source, "none", scaled=False)
    # softmax(beta * s) has lower entropy for larger beta: dropping 1/sqrt(d_k) can only sharpen it
    assert torch.all(off.entropy["unscaled"] <= on.entropy["scaled"] + 1e-12)
    assert torch.all(off.max_weight["unscaled"] >= on.max_weight["scaled"] - 1e-12)
    torch.testing.assert_close(attention_entropy(off.weights), off.entropy["unscaled"])
    torch.testing.assert_close(off.masked_scores, on.masked_scores * math.sqrt(on.q.size(-1)))
    if source == "random":  # variance ~ d_k: visibly saturated, as docs/concepts.md explains
        assert float(off.entropy["unscaled"].mean()) < 0.6 * float(on.entropy["scaled"].mean())


def test_mask_entries_are_minus_infinity_where_attention_is_forbidden():
    text = "the cat sat on the mat"
    t = 6
    causal = lab.attention_lab(text, "random", "causal")
    forbidden = torch.isinf(causal.masked_scores)
    assert torch.equal(forbidden[0], torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1))
    assert torch.all(causal.masked_scores[forbidden] == float("-inf"))
    assert torch.all(causal.weights[forbidden] == 0)
    padded = lab.attention_lab(text, "random", "padding")
    assert padded.labels[-lab.PADS :] == ["<pad>", "<pad> (2)"]
    forbidden = torch.isinf(padded.masked_scores)
    expected = torch.zeros(t + lab.PADS, t + lab.PADS, dtype=torch.bool)
    expected[:, t:] = True  # every query ignores the padding keys, and only them
    assert all(torch.equal(f, expected) for f in forbidden)
    assert not torch.isinf(lab.attention_lab(text, "random", "none").masked_scores).any()
    fig = lab_figures.matrix_figure(padded.masked_scores[0], padded.labels, padded.labels, "masked")
    assert fig.data[0].text[0][-1] == "-∞" and math.isnan(fig.data[0].z[0][-1])


def test_lab_step_figures_show_the_chosen_head(with_all):
    r = lab.attention_lab("the cat sat", "random", "causal", head=3)
    figs = lab_figures.step_figures(r)
    np.testing.assert_allclose(figs["weights"].data[0].z, r.weights[2].numpy())
    assert list(figs["scores"].data[0].y) == r.labels
    assert len(figs["heads"].data) == lab.RANDOM_HEADS
    outputs = lab.lab_outputs("the cat sat", "generation", "none", True, 1)
    assert len(outputs) == 2 + len(lab.STEP_ORDER) + 1  # RoPE GPT: the positional panel says why it is empty
    characters = lab.attention_lab("the cat sat", "generation", "none").labels
    assert outputs[-1]["choices"] == [(label, n) for n, label in enumerate(characters, start=1)]


@pytest.mark.parametrize(("source", "mask"), [("random", "causal"), ("translation", "padding"), ("generation", "none")])
def test_the_query_close_up_adds_up_to_the_scores_and_weights(with_all, source, mask):
    """bertviz's neuron view, checked: each key's row of q ∘ k sums to the score QKᵀ[i, j] the lab
    computed (itself checked against MultiHeadAttention), and the bars are the softmax row, masked
    keys at zero and marked."""
    r = lab.attention_lab("the cat sat on the mat", source, mask, head=2, query=3)
    assert r.query == 2 and r.labels[r.query] == r.labels[2]
    query_row, products, bars = lab_figures.query_figure(r).data
    np.testing.assert_allclose(np.asarray(query_row.z)[0], r.q[1, 2].numpy())
    np.testing.assert_allclose(np.asarray(products.z).sum(axis=1), r.scores[1, 2].numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(bars.x), r.weights[1, 2].numpy())
    allowed = np.ones(len(r.labels), bool) if r.mask is None else r.mask[2].numpy()
    assert [t == "masked: −∞" for t in bars.text] == list(~allowed)
    assert np.asarray(bars.x)[~allowed].sum() == 0 and np.asarray(bars.x).sum() == pytest.approx(1.0)
    if mask == "causal":
        assert list(allowed) == [True] * 3 + [False] * (len(r.labels) - 3)


def test_the_close_up_defaults_to_the_last_token_and_names_a_missing_one(with_all):
    r = lab.attention_lab("the cat sat", "random", "padding")
    assert r.query == r.n_tokens - 1 == 2 and len(r.labels) == r.n_tokens + lab.PADS  # pads are no query
    with pytest.raises(lab.NoSuchToken, match="Token 4 does not exist: the text has 3 tokens"):
        lab.attention_lab("the cat sat", "random", "causal", query=4)
    with pytest.raises(lab.NoSuchToken):
        lab.attention_lab("the cat sat", "random", "causal", query=0)
    assert lab.kept_query(None) is None and lab.kept_query("x") is None and lab.kept_query(2) == 2


def test_positional_and_schedule_views():
    pe, sim = efficiency.positional_figures(20, 16)
    table = sinusoidal_table(20, 16).double()
    np.testing.assert_allclose(pe.data[0].z, table.numpy())
    np.testing.assert_allclose(sim.data[0].z, (table @ table.T).numpy())
    # PE(i).PE(j) = sum_k cos(w_k (i - j)): it depends on the distance only
    s = np.asarray(sim.data[0].z)
    np.testing.assert_allclose(s[3, 7], s[10, 14], atol=1e-9)
    fig = efficiency.schedule_figure(64, 100, 1000)
    x, y = np.asarray(fig.data[0].x), np.asarray(fig.data[0].y)
    assert y.max() == pytest.approx(noam_lr(100, 64, 100), rel=0.02)
    assert x[y.argmax()] == pytest.approx(100, abs=5)
    with pytest.raises(ValueError):
        efficiency.schedule_figure(64, 0, 100)


def test_efficiency_view_reads_stored_results_and_measures_live(tmp_path):
    points = [
        {"kind": k, "n": n, "time_ms": n * n / 1e4, "peak_mib": n / 100}
        for k in attention_bench.KINDS
        for n in (64, 128)
    ]
    (tmp_path / "attention_test.json").write_text(json.dumps({"device": "cpu", "threads": 1, "points": points}))
    stored = efficiency.load_results(tmp_path)  # the app's reader: JSON files, no bench import
    assert stored[0]["name"] == "test"
    live = efficiency.measure_live(sizes=(64,), repeats=1)
    assert {p["kind"] for p in live} == set(attention_bench.KINDS) and all(p["time_ms"] > 0 for p in live)
    fig = efficiency.efficiency_figure(live, stored)
    names = {t.name for t in fig.data}
    assert "explicit, live CPU, now" in names and "explicit, test: cpu, 1 thread, wall time" in names
    gpu = {"device": "cuda", "device_name": "NVIDIA H200", "settings": {"dtype": "bfloat16"}, "name": "h200"}
    assert efficiency.describe(gpu) == "h200: NVIDIA H200, bfloat16"  # the number type is part of the result


def test_bench_kinds_agree_where_they_should():
    q, k, v = attention_bench.make_qkv(32, 1, 2, 8, "cpu", torch.float64)
    torch.testing.assert_close(
        attention_bench.attend("explicit", q, k, v, 8), attention_bench.attend("fused", q, k, v, 8)
    )
    assert attention_bench.attend("linear", q, k, v, 8).shape == attention_bench.attend("window", q, k, v, 8).shape
    table = attention_bench.table([attention_bench.Point("explicit", 64, 1.5, 2.0)])
    assert "64" in table and "1.50" in table


# ----------------------------------------------------------------------------------------------
# Missing checkpoints
# ----------------------------------------------------------------------------------------------


def _build(module) -> gr.Blocks:
    with gr.Blocks() as demo:
        module.build()
    return demo


def test_tabs_work_without_any_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path))
    with pytest.raises(MissingCheckpoint, match="generation model is not available"):
        maps.attention_map("generation", "causal self", text="hello")
    demo = _build(maps)
    markdown = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert all(task in markdown[0].value for task in maps.KINDS)
    assert lab.available_sources() == ["random"]
    assert lab.attention_lab("hello world", "random").output.shape == (2, lab.RANDOM_D_MODEL)
    with pytest.raises(MissingCheckpoint):
        lab.attention_lab("hello world", "generation")
    _build(lab)


def test_tabs_work_with_only_a_gpt_checkpoint(monkeypatch, tmp_path):
    save_gpt(tmp_path)
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path))
    result = maps.attention_map("generation", "causal self", text="soft light")
    assert result.values.shape == (10, 10)
    with pytest.raises(MissingCheckpoint, match="vision model is not available"):
        maps.attention_map("vision", "CLS to patches", image=an_image())
    demo = _build(maps)
    dropdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "model"]
    assert [c[1] for c in dropdowns[0].choices] == ["generation"]
    assert lab.available_sources() == ["generation", "random"]
    _build(lab)


def _of_type(demo: gr.Blocks, kind: type) -> list:
    return [b for b in demo.blocks.values() if isinstance(b, kind)]


def test_the_tabs_open_with_their_example_worked_out(with_all):
    """Attention Maps and the Lab show their example before anyone asks (worked out once while the
    app is built): what their buttons give for the same input."""
    entry = registry.model("generation")  # the first model of the registry
    expected = maps.attention_map("generation", "causal self", text=entry.example)
    demo = _build(maps)
    [plot] = _of_type(demo, gr.Plot)
    assert json.loads(plot.value["plot"])["data"] == json.loads(expected.figure.to_json())["data"]
    layer, head = (b for b in _of_type(demo, gr.Dropdown) if b.label in ("layer", "head"))
    assert [c[0] for c in layer.choices] == ["average", "1", "2"] and layer.value == "average"
    assert [c[0] for c in head.choices] == ["average", "1", "2"]
    [table] = _of_type(demo, gr.Dataframe)
    assert len(table.value["data"]) == 2 * 2  # a row per layer and head
    assert [b for b in _of_type(demo, gr.Image) if b.value is not None], "no model view"

    shown = lab.lab_outputs(lab.EXAMPLE, lab.default_source(), "causal", True, 1)
    demo = _build(lab)
    assert shown[0] in [b.value for b in _of_type(demo, gr.Markdown)]
    figures = [json.loads(b.value["plot"])["data"] for b in _of_type(demo, gr.Plot) if b.value is not None]
    assert figures[: len(lab_figures.STEP_ORDER)] == [json.loads(f.to_json())["data"] for f in shown[2:-1]]
    [query] = [b for b in _of_type(demo, gr.Dropdown) if b.label == "query token"]
    assert query.value == len(query.choices) == shown[-1]["value"]  # the last token


def test_a_tab_whose_model_fails_at_build_opens_empty(with_all, monkeypatch):
    """A checkpoint damaged in a way the quick check missed: the tab still builds, empty, and says
    what to do; the error shows when someone asks (get_model's message)."""

    def damaged(*args, **kwargs):
        raise MissingCheckpoint("The generation model is switched off: ...")

    monkeypatch.setattr(maps, "show", damaged)
    demo = _build(maps)
    [plot] = _of_type(demo, gr.Plot)
    assert plot.value is None
    assert any("Type a text, then press **Show attention**" in b.value for b in _of_type(demo, gr.Markdown))
    monkeypatch.setattr(lab, "lab_outputs", damaged)
    assert all(b.value is None for b in _of_type(_build(lab), gr.Plot)[: len(lab_figures.STEP_ORDER)])


def test_worked_examples_leave_out_what_the_model_cannot_do_but_not_bugs():
    from demos.common import UserError, worked_example

    assert worked_example(lambda a, b: a + b, 1, 2) == 3
    for error in (MissingCheckpoint("not here"), UserError("cannot read this text")):

        def fails(error=error):
            raise error

        assert worked_example(fails, fallback=("empty",)) == ("empty",)
    with pytest.raises(ZeroDivisionError):  # a bug is not hidden
        worked_example(lambda: 1 / 0)


# ----------------------------------------------------------------------------------------------
# Speed: plots within 1 s on 2 cores for 64 tokens
# ----------------------------------------------------------------------------------------------


def test_maps_render_within_a_second_for_64_tokens(monkeypatch, tmp_path):
    """A full request for a 64-character input on a 6-layer, 6-head GPT (the shipped shape, narrower):
    forward pass, enlarged heatmap, 36-map model view, summary, and their serialisation. Runs with
    the process's torch threads (OMP_NUM_THREADS): oversubscribing a busy machine measures the
    machine, not the tab."""
    save_gpt(tmp_path, n_layers=6, n_heads=6, d_model=48)
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path))
    text = (SHAKESPEARE * 2)[:64]
    maps.attention_map("generation", "causal self", text=text[::-1])  # load the model and imports once
    timings = []
    for i in range(3):  # a new text each time: no cached forward pass
        start = time.perf_counter()
        result = maps.attention_map("generation", "causal self", "1", str(i + 1), text=text[i:] + "ab"[:i])
        result.figure.to_json()
        Image.fromarray(result.model_view).save(io.BytesIO(), format="PNG")
        json.dumps(result.summary)
        timings.append(time.perf_counter() - start)
    assert result.values.shape == (64, 64) and result.model_view.shape[0] > 6 * 64
    assert min(timings) < 1.0, f"render took {timings} s"


@pytest.mark.slow
def test_endpoints_answer_through_gradio_client(with_all):
    """/attention_map and /attention_lab as an API user calls them; mistakes come back as messages."""
    from gradio_client import Client

    with gr.Blocks() as demo:
        for module in (maps, lab):
            with gr.Tab(module.TITLE):
                module.build()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1")
    try:
        client = Client(demo.local_url, verbose=False)
        plot, view, table, notes, layer, head = client.predict(
            "generation", "causal self", "2", "1", "soft light", "de", None, None, api_name="/attention_map"
        )
        assert json.loads(plot["plot"])["data"][0]["type"] == "heatmap"
        assert Image.open(view).size[0] > 100 and len(table["data"]) == 2 * 2
        with pytest.raises(Exception, match="Layer 7 does not exist"):
            client.predict("generation", "causal self", "7", "1", "soft", "de", None, None, api_name="/attention_map")
        summary, saturation, *figures = client.predict(
            "the cat sat", "random", "causal", False, 2, api_name="/attention_lab"
        )
        assert "entropy" in summary and len(figures) == len(lab.STEP_ORDER) + 1 and len(saturation["data"]) == 4
        assert figures[-1]["value"] == 3  # the close-up's token: the last of "the cat sat"
    finally:
        demo.close()


# ----------------------------------------------------------------------------------------------
# Defects people met, each held down
# ----------------------------------------------------------------------------------------------


def test_translation_maps_say_length_limit_only_when_the_decoder_hit_it(with_all, monkeypatch):
    """A complete translation carries no length-limit note; one that ran to the limit does; its
    decoder rows end with the </s> row, as in the Translate tab."""
    from demos import translation
    from models.translation import max_output_len

    model, tokenizer = translation.get_model("translation")
    source, _ = translation.read_source(tokenizer, SENTENCES[0], model.config.max_len)
    for length, cut in ((3, False), (max_output_len(model, len(source)), True)):
        maps._CACHE.clear()
        monkeypatch.setattr(translation, "translate_ids", lambda *a, n=length, **k: [[5] * n])
        a = maps.compute_attention("translation", "cross", text=SENTENCES[0], target="de")
        assert any("length limit" in note for note in a.notes) == cut
        assert len(a.query_labels) == length + 1 and a.query_labels[-1] == "</s>"
        tab = translation.translate(SENTENCES[0], "en", "de")
        assert tab.target_tokens == a.query_labels and tab.finished == (not cut)
    maps._CACHE.clear()


def test_switching_model_clears_the_previous_result(with_all):
    kind, text, target, image, audio, plot, grid, summary, notes, layer, head = maps.switch("audio")
    assert (plot, grid, summary) == (None, None, None)
    assert "Record or upload a clip" in notes
    assert kind["value"] == "CLS to frames" and layer["value"] == head["value"] == "average"
    assert audio["visible"] and not image["visible"] and not text["visible"]


def test_changing_kind_before_any_input_shows_no_error(with_all):
    for task, kind in (("vision", "rollout"), ("audio", "CLS to frames"), ("generation", "causal self")):
        plot, grid, summary, notes, *_ = maps.redraw(task, kind, "average", "average", "", "de", None, None)
        assert plot is None and grid is None and "then press" in notes
    with pytest.raises(ValueError, match="Upload an image first"):  # the button still says what is missing
        maps.show("vision", "rollout", "average", "average", "", "de", None, None)


def test_lab_heads_follow_the_layer_and_default_is_sinusoidal(with_all, monkeypatch, tmp_path):
    from demos.common import checkpoint_config

    assert lab.default_source() == "translation"  # the paper's sinusoidal encoding, not the RoPE GPT
    assert lab.head_count("translation") == checkpoint_config("translation")["n_heads"] == 2
    assert lab.head_count("random") == lab.RANDOM_HEADS
    update = lab.head_slider("random", 3)
    assert update["maximum"] == lab.RANDOM_HEADS and update["value"] == 3
    assert lab.head_slider("translation", 4)["value"] == 2  # kept within the layer's heads
    demo = _build(lab)
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "head"]
    assert sliders[0].maximum == 2
    r = lab.attention_lab("the cat sat", lab.default_source(), "none")
    assert r.positional is not None  # the positional-encoding step has something to show
    save_gpt(tmp_path)
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path))
    assert lab.default_source() == "random"  # only the RoPE GPT: the random layer's sinusoids


def test_heatmaps_label_every_token_and_share_one_colour_scale(with_all):
    from demos import translation

    labels = [f"t{i}" for i in range(90)]
    fig = attention_heatmap(np.full((90, 90), 1 / 90), labels, labels, "title")
    assert fig.layout.xaxis.dtick == 1 and fig.layout.yaxis.dtick == 1 and len(fig.data[0].x) == 90
    tab = translation.translate(SENTENCES[0], "en", "de")
    tab_fig = translation.attention_figure(tab, "1", "2")
    map_fig = maps.attention_map("translation", "cross", "1", "2", text=SENTENCES[0], target="de").figure
    np.testing.assert_allclose(np.asarray(tab_fig.data[0].z), np.asarray(map_fig.data[0].z), rtol=1e-6)
    assert tab_fig.data[0].colorscale == map_fig.data[0].colorscale
    assert tab_fig.data[0].zmax == pytest.approx(map_fig.data[0].zmax)
    demo = _build(translation)
    plots = [b for b in demo.blocks.values() if isinstance(b, gr.Plot)]
    assert plots and not any(p.show_label for p in plots)  # no label over the heatmap's title


def test_imagenet_choice_is_offered_only_when_it_can_work(with_all, monkeypatch):
    from demos import pretrained_vit, vision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pretrained_vit, "weights_cached", lambda name: False)
    assert "cannot be reached" in vision.pretrained_unavailable()
    demo = _build(vision)
    radios = [b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "Model"]
    assert [c[1] for c in radios[0].choices] == [vision.OURS]
    notes = " ".join(b.value or "" for b in demo.blocks.values() if isinstance(b, gr.Markdown))
    assert "not offered here" in notes
    monkeypatch.setattr(pretrained_vit, "weights_cached", lambda name: True)
    assert vision.pretrained_unavailable() is None


def test_the_app_imports_no_bench_code():
    """The efficiency view reads bench/results/*.json as data; building the app loads no bench module."""
    import subprocess
    import sys

    code = "import sys, app; app.build_app(); print(sorted(m for m in sys.modules if m.split('.')[0] == 'bench'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_registered_model_is_complete_and_listed_once():
    """A model is one line in demos/registry.py: its tab module must carry what that line promises."""
    from demos import registry

    assert len(set(registry.tasks())) == len(registry.MODELS)
    for entry in registry.MODELS:
        tab = entry.module()
        assert entry.task == tab.TASK and isinstance(tab.TITLE, str) and callable(tab.build), entry.task
        assert callable(tab.attention_of) and entry.attention_kinds and entry.input in registry.INPUTS
        assert maps.KINDS[entry.task] == entry.attention_kinds
    titles = [tab.TITLE for tab in registry.tab_modules()]
    assert titles[: len(registry.MODELS)] == [m.module().TITLE for m in registry.MODELS]
    assert {"Attention Maps", "Attention Lab"} <= set(titles) and len(set(titles)) == len(titles)
