"""The app as a user gets it: `python app.py` in a subprocess, every endpoint called through
gradio_client (the way Gradio tests itself), streaming included; and an app missing some
checkpoints, whose other tabs still work."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from PIL import Image, ImageDraw

from demos import registry
from demos.vision import OURS
from tests.app_server import ROOT, AppServer

pytestmark = pytest.mark.slow  # the shared app (tests/conftest.py), and one more without checkpoints

TASKS = tuple(registry.tasks())  # every model the app has
ENDPOINTS = {
    "/generate",
    "/next_token",
    "/translate",
    "/classify_image",
    "/classify_audio",
    "/attention_map",
    "/attention_lab",
}
CHECKPOINTS = ROOT / "checkpoints"
TIMEOUT_S = 60  # per request: anything slower is a hang


def config(task: str) -> dict:
    return json.loads((CHECKPOINTS / task / "config.json").read_text())["config"]


def needs_all_checkpoints() -> None:
    missing = [t for t in TASKS if not (CHECKPOINTS / t / "model.safetensors").exists()]
    if missing:
        pytest.skip(f"the shipped checkpoints of {', '.join(missing)} are not in {CHECKPOINTS}")


@pytest.fixture(scope="module")
def client(request):
    needs_all_checkpoints()  # before the app starts
    return Client(request.getfixturevalue("app_server").url, verbose=False)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    """A red car on a road under a green background, 96x64 (not square, so it gets cropped)."""
    image = Image.new("RGB", (96, 64), (150, 190, 140))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 44, 96, 64), fill=(90, 90, 95))
    draw.rounded_rectangle((20, 26, 76, 48), radius=5, fill=(200, 30, 35))
    draw.ellipse((26, 40, 38, 52), fill=(20, 20, 20))
    draw.ellipse((58, 40, 70, 52), fill=(20, 20, 20))
    path = tmp_path_factory.mktemp("inputs") / "car.png"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def audio_file(tmp_path_factory) -> Path:
    """0.6 s of a gliding two-tone 'voice' between silences, 16 kHz 16-bit WAV."""
    rate = 16000
    t = np.arange(int(0.6 * rate)) / rate
    pitch = np.linspace(180, 120, t.size)
    voice = 0.4 * np.sin(2 * np.pi * np.cumsum(pitch) / rate) + 0.2 * np.sin(2 * np.pi * 700 * t)
    clip = np.concatenate([np.zeros(rate // 5), voice * np.hanning(t.size), np.zeros(rate // 5)])
    path = tmp_path_factory.mktemp("inputs") / "voice.wav"
    sf.write(path, clip.astype(np.float32), rate, subtype="PCM_16")
    return path


def plot_json(value: dict) -> dict:
    """A gr.Plot output -> the plotly figure as a dict."""
    assert value["type"] == "plotly"
    return json.loads(value["plot"])


def plot_array(value) -> np.ndarray:
    """A trace's data array: plotly 6 sends numpy arrays as {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", array.size)).split(",")]
        return array.reshape(shape).astype(float)
    return np.array(value, dtype=float)


def label_confidences(value: dict) -> list[tuple[str, float]]:
    return [(c["label"], c["confidence"]) for c in value["confidences"]]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read().decode()


def tab_endpoints(client) -> set[str]:
    """The tabs' named endpoints: callable, though the API page (and MCP) list only the tools of
    demos/tools.py, which tests/test_hub.py tests."""
    base = client.src.rstrip("/") + "/gradio_api/info"
    every = json.loads(http_get(base + "?all_endpoints=true"))["named_endpoints"]
    tools = json.loads(http_get(base))["named_endpoints"]
    return {name for name in every if name not in tools and not name.startswith("/load_example")}


def endpoints_called_by_tests() -> set[str]:
    """Every endpoint some test file calls through gradio_client (`api_name="/..."`)."""
    called = re.compile(r'api_name="(/\w+)"')
    return {name for path in (ROOT / "tests").glob("test_*.py") for name in called.findall(path.read_text())}


def test_every_named_endpoint_is_called_by_a_test(client):
    """This file calls the first tabs' endpoints; newer tabs are called from their own test files.
    An endpoint no test calls, or a listed one that disappeared, fails here."""
    named = tab_endpoints(client)
    assert named >= ENDPOINTS
    assert named - endpoints_called_by_tests() == set()


def fetch(url: str, encodings: str) -> tuple[str | None, bytes]:
    """GET `url` as a browser that accepts `encodings`: (Content-Encoding, the body as sent)."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": encodings})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return response.headers.get("Content-Encoding"), response.read()


def test_the_page_goes_compressed_and_gradio_keeps_its_own_for_scripts(client):
    """demos/compression.py: the page (its config holds the tabs' worked examples) goes gzip'd to a
    browser that accepts it, the same page as uncompressed; Gradio's scripts keep its brotli."""
    url = client.src.rstrip("/") + "/"
    encoding, sent = fetch(url, "gzip, deflate, br")
    page = gzip.decompress(sent)
    assert encoding == "gzip" and len(sent) < len(page) / 4
    assert b"Transformer Playground" in page
    assert fetch(url, "identity") == (None, page)  # only for those that ask
    script = re.search(rb'src="\./(assets/[^"]+\.js)"', page).group(1).decode()
    assert fetch(url + script, "gzip, deflate, br")[0] == "br"


def test_generate_streams_growing_text(client):
    prompt, n_new = "ROMEO:\nBut soft", 300
    job = client.submit(prompt, n_new, 0.8, 65, 1.0, 3, True, api_name="/generate")
    texts, arrived = [], []
    for text, _stats in job:
        texts.append(text)
        arrived.append(time.perf_counter())
    final_text, stats = job.result(timeout=TIMEOUT_S)
    assert len(texts) >= 3, "the text should arrive in pieces, not at once"
    assert all(t.startswith(prompt) for t in texts)
    lengths = [len(t) for t in texts]
    assert lengths == sorted(lengths) and len(set(lengths)) >= 3
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False)), "each piece extends the last"
    assert arrived[0] < arrived[-1], "pieces arrive over time"
    assert final_text == texts[-1] and len(final_text) == len(prompt) + n_new
    assert f"**{n_new}** characters" in stats and "tokens/s" in stats
    # the same seed gives the same text: the stream is the model's output, not something else
    again, _ = client.predict(prompt, n_new, 0.8, 65, 1.0, 3, True, api_name="/generate")
    assert again == final_text


def test_generate_without_kv_cache_gives_the_same_greedy_text(client):
    args = ("To be, or not to be", 40, 0.0, 65, 1.0, 0)
    cached, _ = client.predict(*args, True, api_name="/generate")
    uncached, stats = client.predict(*args, False, api_name="/generate")
    assert cached == uncached and "KV cache **off**" in stats


def test_next_token_distribution(client):
    bars = plot_json(client.predict("ROMEO:\nBut soft, what ligh", 1.0, 65, 1.0, api_name="/next_token"))["data"][0]
    probs = bars["x"]
    assert len(probs) == 10 and probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1 + 1e-6
    assert bars["y"][0] == "t", "after 'ligh' the model expects a 't'"


def test_translate(client):
    text = "A man is playing a guitar on the street."
    translation, notes, plot, *_ = client.predict(
        text, "English", "German", 4, "average", "average", api_name="/translate"
    )
    assert translation.strip() and translation != text
    heatmap = plot_json(plot)["data"][0]
    weights = plot_array(heatmap["z"])
    assert weights.shape == (len(heatmap["y"]), len(heatmap["x"]))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)  # each target row is a softmax
    # plotly reads labels as HTML, so the end token is sent escaped (and shown as </s>)
    assert heatmap["x"][-1] == "&lt;/s&gt;" and heatmap["y"][-1] == "&lt;/s&gt;"


def test_translate_german_to_french_goes_through_english(client):
    translation, notes, *_ = client.predict(
        "Zwei Hunde spielen im Schnee.", "German", "French", 2, "1", "2", api_name="/translate"
    )
    assert translation.strip()
    assert "through English" in notes


def test_classify_image(client, image_file):
    label, model_view, rollout, cls_map = client.predict(
        handle_file(str(image_file)), "layer 2", "head 1", OURS, api_name="/classify_image"
    )
    classes = config("vision")["class_names"]
    confidences = label_confidences(label)
    assert len(confidences) == 5 and label["label"] == confidences[0][0] in classes
    values = [c for _, c in confidences]
    assert values == sorted(values, reverse=True)
    assert 0.5 - 1e-6 <= sum(values) <= 1 + 1e-6  # the top 5 of 10 probabilities hold at least half
    for path in (model_view, rollout, cls_map):
        with Image.open(path) as picture:
            assert picture.size == (256, 256)


def test_classify_audio(client, audio_file):
    label, plot, summary = client.predict(handle_file(str(audio_file)), "1", "2", api_name="/classify_audio")
    digits = config("audio")["class_names"]
    confidences = label_confidences(label)
    assert len(confidences) == 3 and confidences[0][0] in digits
    assert 0.3 - 1e-6 <= sum(c for _, c in confidences) <= 1 + 1e-6  # top 3 of 10
    traces = plot_json(plot)["data"]
    assert [t["type"] for t in traces] == ["heatmap", "bar"]
    assert plot_array(traces[0]["z"]).shape[0] == config("audio")["n_mels"]
    assert summary.startswith("Heard ")


@pytest.mark.parametrize(("task", "kind"), [(m.task, kind) for m in registry.MODELS for kind in m.attention_kinds])
def test_attention_map(client, image_file, audio_file, task, kind):
    model = registry.model(task)
    image = handle_file(str(image_file)) if model.input == registry.IMAGE else None
    audio = handle_file(str(audio_file)) if model.input == registry.AUDIO else None
    plot, model_view, summary, notes, layer, head = client.predict(
        task, kind, "2", "average", model.example, "de", image, audio, api_name="/attention_map"
    )
    c = config(task)
    if kind == "encoder self":
        layers = c.get("n_encoder_layers") or c["n_layers"]
    else:
        layers = c.get("n_layers") or c["n_decoder_layers"]
    heads = 1 if kind == "rollout" else c["n_heads"]
    assert plot_json(plot)["data"], "the enlarged map has traces"
    with Image.open(model_view) as picture:
        assert picture.width > 64 and picture.height > 64
    assert len(summary["data"]) == layers * heads
    assert {row[0] for row in summary["data"]} == set(range(1, layers + 1))
    assert layer["value"] == "2" and len(layer["choices"]) == layers + 1  # 'average' + each layer
    if task == "generation":
        assert summary["data"][0][summary["headers"].index("most attended")]
    if model.input in (registry.IMAGE, registry.AUDIO):
        assert "The model" in notes


def test_attention_lab(client):
    summary, saturation, *plots = client.predict(
        "the cat sat on the mat", "random", "causal", True, 2, api_name="/attention_lab"
    )
    assert "6 tokens" in summary and "4 heads" in summary
    assert [row[0] for row in saturation["data"]] == [1, 2, 3, 4]
    for row in saturation["data"]:  # scaling by 1/sqrt(d_k) keeps the softmax flatter
        assert row[1] >= row[3] - 1e-9
    weights = next(p for p in map(plot_json, plots) if p["layout"]["title"]["text"].startswith("softmax"))
    z = plot_array(weights["data"][0]["z"])
    np.testing.assert_allclose(z.sum(axis=1), 1.0, atol=0.02)  # shown rounded: rows still sum to ~1
    assert np.allclose(np.triu(z, 1), 0), "the causal mask leaves nothing above the diagonal"


def test_app_with_some_checkpoints_missing(tmp_path):
    """Only generation and vision are there: the app starts, translation and audio say how to get
    their model, the other tabs answer."""
    for task in ("generation", "vision"):
        if not (CHECKPOINTS / task / "model.safetensors").exists():
            pytest.skip(f"the shipped {task} checkpoint is not in {CHECKPOINTS}")
        (tmp_path / task).symlink_to(CHECKPOINTS / task)
    with AppServer({"PLAYGROUND_CHECKPOINTS": str(tmp_path)}) as server:
        client = Client(server.url, verbose=False)
        page = json.loads(http_get(server.url + "config"))
        markdown = " ".join(c["props"].get("value") or "" for c in page["components"] if c["type"] == "markdown")
        for task in ("translation", "audio"):
            assert f"The {task} model is not available" in markdown
            assert f"python -m training.train {task}" in markdown
        named = tab_endpoints(client)
        assert {"/translate", "/classify_audio", "/fill_mask"} & named == set(), "their tabs are switched off"
        assert ENDPOINTS - {"/translate", "/classify_audio"} <= named
        text, _ = client.predict("ROMEO:", 20, 0.8, 65, 1.0, 0, True, api_name="/generate")
        assert len(text) == len("ROMEO:") + 20
        image = tmp_path / "grey.png"
        Image.new("RGB", (40, 40), (120, 120, 120)).save(image)
        label, *_ = client.predict(handle_file(str(image)), "average", "average", OURS, api_name="/classify_image")
        assert label["label"] in config("vision")["class_names"]
        with pytest.raises(Exception, match="The audio model is not available"):
            client.predict("audio", "rollout", "average", "average", "", "de", None, None, api_name="/attention_map")
