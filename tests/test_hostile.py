"""A visitor who tries to knock the public app over: files whose header sets the cost, huge
bodies, paths on the server, damaged checkpoints, values that overflow, a flood from one client.

Each attack must end quickly (a generous time bound: the machine is shared), without a jump in
the server's memory (its peak resident memory, VmHWM, may grow by at most MEMORY_MB), with a
sentence that says what was refused, and the next good request must work. The attacks go
through HTTP, as a script would send them (gradio_client checks some things itself, so raw
requests are used where the client would stop them first)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from gradio_client import Client, handle_file
from PIL import Image

from demos import common
from demos.checkpoint_checks import checkpoint_problem
from demos.fair_queue import MAX_BODY_BYTES, MAX_PER_ADDRESS, MAX_PER_SESSION
from demos.input_checks import MAX_TEXT_CHARS, NOT_UPLOADED
from tests.app_server import ROOT, AppServer

TIME_S = 30.0  # one hostile request; before the limits the worst took 34 s and +5.7 GB
MEMORY_MB = 400.0
GOOD_TRANSLATE = ("A dog runs.", "English", "German", 1, "average", "average")
TASKS = ("generation", "translation", "vision", "audio")


def needs_checkpoints():
    if not all((ROOT / "checkpoints" / t / "model.safetensors").exists() for t in TASKS):
        pytest.skip("needs the four shipped checkpoints in checkpoints/")


# ----------------------------------------------------------------------------------------------
# Talking to the app
# ----------------------------------------------------------------------------------------------


def memory_mb(server: AppServer, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def raw_call(url: str, api: str, data: list, headers: dict | None = None, timeout: float = 60) -> tuple[str, str]:
    """POST /gradio_api/call/<api> and read its result stream, as curl would: ("complete" or
    "error", the data), or ("refused", the body) when the request is not queued at all."""
    body = json.dumps({"data": data}).encode()  # ASCII JSON: a lone surrogate travels as \\ud800
    sent = {"content-type": "application/json", **(headers or {})}
    r = httpx.post(f"{url}gradio_api/call/{api}", content=body, headers=sent, timeout=timeout)
    if r.status_code != 200:
        return "refused", f"{r.status_code} {r.text}"
    event_id = r.json()["event_id"]
    r = httpx.get(f"{url}gradio_api/call/{api}/{event_id}", headers=headers, timeout=timeout)
    events = re.findall(r"event: (\w+)\ndata: (.*)", r.text)
    assert events, r.text[:300]
    kind, data = events[-1]
    if kind == "error":  # {"error": sentence, ...} for a gr.Error; null or text otherwise
        parsed = json.loads(data) if data.startswith(("{", '"')) else data
        data = str(parsed.get("error") if isinstance(parsed, dict) else parsed)
    return kind, data


def upload(url: str, path: Path) -> str:
    """Upload a file as a browser does; its path on the server."""
    return httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, path.read_bytes())}).json()[0]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def assert_translate_works(url: str) -> None:
    kind, data = raw_call(url, "translate", list(GOOD_TRANSLATE))
    assert kind == "complete", data
    assert json.loads(data)[0].strip()


@pytest.fixture(scope="module")
def server():
    needs_checkpoints()
    with AppServer(env={"PLAYGROUND_TRUST_FORWARDED": "1"}) as app:
        yield app


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


# ----------------------------------------------------------------------------------------------
# Audio whose header sets the cost
# ----------------------------------------------------------------------------------------------


def odd_rate_wav(path: Path) -> None:
    """0.6 s at 44101 Hz (shares no factor with 8 kHz): 53 KB that took 27 s and +5.7 GB."""
    rate = 44101
    t = np.arange(int(0.6 * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size)).astype(np.float32), rate, subtype="PCM_16")


def many_channel_flac(path: Path) -> None:
    """8 channels at 192 kHz for a minute, nearly silent so it compresses to a few hundred KB; the
    whole file decodes to 370 MB of float32 (a longer one, to gigabytes)."""
    rate, frames = 192_000, 192_000 * 60
    x = np.zeros((frames, 8), np.int16)
    x[rate : rate + rate // 2] = (3000 * np.sin(np.arange(rate // 2) / 20)).astype(np.int16)[:, None]
    sf.write(path, x, rate, subtype="PCM_16")


def flac_claiming_hours(path: Path) -> None:
    """A 1 s FLAC whose header (STREAMINFO's 36-bit sample count) claims 2.4 million hours."""
    import io

    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC"
    data[21] = (data[21] & 0xF0) | 0x0F  # total samples: 4 bits here, then 4 bytes
    data[22:26] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


HOSTILE_AUDIO = {
    "odd-rate-wav": (odd_rate_wav, "odd.wav", "Resampled from 44101 Hz"),
    "8ch-192khz-flac": (
        many_channel_flac,
        "many.flac",
        "only its first 10 s were read.*Mixed 8 channels",
    ),
    "header-claims-hours": (flac_claiming_hours, "hours.flac", "ends before its header says"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HOSTILE_AUDIO))
def test_audio_cost_is_set_by_what_the_model_hears(server, client, tmp_path, name):
    make, filename, message = HOSTILE_AUDIO[name]
    path = tmp_path / filename
    make(path)
    if name == "header-claims-hours":
        assert sf.info(str(path)).duration > 1e6  # the lie is in the header
    before = memory_mb(server)
    result, seconds = timed(
        client.predict, handle_file(str(path)), "rollout (all layers)", "mean of heads", api_name="/classify_audio"
    )
    grown = memory_mb(server) - before
    summary = str(result[2])
    assert seconds < TIME_S, f"{name} took {seconds:.1f} s"
    assert grown < MEMORY_MB, f"{name} grew the server's peak memory by {grown:.0f} MB"
    assert re.search(message, summary, re.S), summary
    assert_translate_works(server.url)


def test_resampling_any_rate_is_cheap_and_accurate():
    """The resampler's filter bank stays small for rates that share no factor with 8 kHz, and a
    sine keeps its frequency (the rational approximation's pitch error is inaudible)."""
    import resource

    import torch

    from models.audio import resample

    for rate in (44101, 767_999, 8001, 11025, 1001):
        t = np.arange(int(1.0 * rate)) / rate
        x = torch.tensor(np.sin(2 * np.pi * 200 * t), dtype=torch.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        y, seconds = timed(resample, x, rate, 8000)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        assert seconds < 5 and grown < 200, (rate, seconds, grown)
        assert abs(len(y) - 8000) <= 20, (rate, len(y))
        spectrum = np.abs(np.fft.rfft(y.numpy()[100:-100], n=8 * 8 * 8000))  # 1/8 Hz bins
        peak_hz = np.argmax(spectrum) * 8000 / (8 * 8 * 8000)
        assert abs(peak_hz - 200) < 0.25, (rate, peak_hz)  # the pitch is kept (to 0.1%)
        assert abs(y.numpy()[100:-100].std() - np.sqrt(0.5)) < 0.02, rate  # and the loudness


# ----------------------------------------------------------------------------------------------
# Bodies, text, paths
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_huge_body_is_refused_before_it_is_read(server):
    before = memory_mb(server)
    prompt = "a" * (8 * MAX_BODY_BYTES)
    body = json.dumps({"data": [prompt, 5, 0.8, 65, 1.0, 0, True]}).encode()
    r, seconds = timed(
        httpx.post,
        f"{server.url}gradio_api/call/generate",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413 and "larger than this app takes" in r.text, r.text[:200]

    def chunks():  # no Content-Length: refused as soon as it grows past the limit
        for _ in range(8):
            yield b"a" * MAX_BODY_BYTES

    r2 = httpx.post(f"{server.url}gradio_api/queue/join", content=chunks(), timeout=60)
    assert r2.status_code == 413, r2.text[:200]
    assert seconds < TIME_S
    assert memory_mb(server) - before < MEMORY_MB
    assert_translate_works(server.url)


@pytest.mark.slow
def test_text_longer_than_the_cap_gets_a_clear_message(server):
    kind, data = raw_call(server.url, "translate", ["A dog runs. " * 300, "English", "German", 1, "average", "average"])
    assert kind == "error" and f"at most {MAX_TEXT_CHARS:,}" in data, data
    assert_translate_works(server.url)


def foreign_payloads(upload_dir: str) -> dict[str, dict]:
    return {
        "exists": {"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}},
        "missing": {"path": "/etc/no-such-file-here", "meta": {"_type": "gradio.FileData"}},
        "no-meta": {"path": "/etc/passwd"},
        "escapes-upload-folder": {"path": f"{upload_dir}/../../etc/passwd"},
        "app-source": {"path": str(ROOT / "app.py")},
    }


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["classify_image", "attention_map", "classify_picture", "classify_audio"])
def test_only_uploaded_files_are_opened(server, client, tmp_path, endpoint):
    from gradio.utils import get_upload_folder

    messages = set()
    for name, payload in foreign_payloads(get_upload_folder()).items():
        data = {
            "classify_image": [payload, "average", "average"],
            "attention_map": ["vision", "rollout", "average", "average", "", "de", payload, None],
            "classify_picture": [payload],
            "classify_audio": [payload, "rollout (all layers)", "mean of heads"],
        }[endpoint]
        kind, message = raw_call(server.url, endpoint, data)
        assert kind == "error", f"{name}: {message[:200]}"
        messages.add(message)
    # one answer whether the path exists or not: it tells nothing about the server's files
    assert messages == {NOT_UPLOADED}, messages
    picture = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(picture)
    assert client.predict(handle_file(str(picture)), api_name="/classify_picture")  # an upload works


# ----------------------------------------------------------------------------------------------
# Values that overflow, or are not what they claim
# ----------------------------------------------------------------------------------------------

GEN = ["ROMEO:", 5, 0.8, 65, 1.0, 0, True]

VALUES = {
    "top-k-10**400": ("generate", {3: 10**400}, "Top-k is far too large"),
    "top-k-inf-text": ("generate", {3: "inf"}, "Top-k must be a number"),
    "beam-infinity": ("translate", {3: float("inf")}, "Beam size must be a finite number"),
    "temperature-nan": ("generate", {2: float("nan")}, "Temperature must be a finite number"),
    "seed-bool": ("generate", {5: True}, "Seed must be a number"),
    "prompt-lone-surrogate": ("generate", {0: "RO\ud800MEO"}, "not valid text"),
    "prompt-list": ("generate", {0: ["ROMEO"]}, "Prompt must be text, not list"),
    "prompt-dict": ("generate", {0: {"text": "ROMEO"}}, "Prompt must be text, not dict"),
    "cache-number": ("generate", {6: 1}, "KV cache must be true or false"),
    "tool-text-dict": ("translate_text", None, "text must be text, not dict"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VALUES))
def test_values_are_checked_strictly(server, name):
    api, changes, message = VALUES[name]
    if api == "generate":
        data = [changes.get(i, v) for i, v in enumerate(GEN)]
    elif api == "translate":
        data = [changes.get(i, v) for i, v in enumerate(GOOD_TRANSLATE)]
    else:
        data = [{"a": 1}, "English", "German", 2]
    (kind, text), seconds = timed(raw_call, server.url, api, data)
    assert kind == "error" and message in text, text[:300]
    assert seconds < TIME_S
    assert_translate_works(server.url)


@pytest.mark.slow
def test_a_switch_sent_as_text_means_what_it_says(server):
    def lab(scaled):
        kind, data = raw_call(server.url, "attention_lab", ["the cat sat", "random", "causal", scaled, 1])
        assert kind == "complete", data
        return data

    assert lab("false") == lab(False) != lab(True)
    assert lab("TRUE") == lab(True)


# ----------------------------------------------------------------------------------------------
# One client floods the queue while another is served
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_flood_from_one_client_does_not_starve_another(server):
    flooder = {"X-Forwarded-For": "203.0.113.7"}
    visitor = {"X-Forwarded-For": "198.51.100.2"}
    slow_job = json.dumps({"data": ["ROMEO:", 300, 0.8, 65, 1.0, 0, False]}).encode()  # no KV cache: slow
    answers = []

    def flood():  # 70 posted at once and never read, as in the report
        import asyncio

        async def burst():
            headers = {**flooder, "content-type": "application/json"}
            async with httpx.AsyncClient(headers=headers, timeout=60) as http:
                url = f"{server.url}gradio_api/call/generate"
                answers.extend(await asyncio.gather(*(http.post(url, content=slow_job) for _ in range(70))))

        asyncio.run(burst())

    thread = threading.Thread(target=flood)
    thread.start()
    time.sleep(0.5)
    visitor_client = Client(server.url, verbose=False, headers=visitor)
    result, waited = timed(visitor_client.predict, *GOOD_TRANSLATE, api_name="/translate")
    thread.join()
    assert result[0].strip()
    assert waited < 20, f"a good request waited {waited:.1f} s during the flood"
    accepted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(accepted) <= MAX_PER_ADDRESS, len(accepted)  # each /call request has a session of its own
    assert refused and all("requests waiting or running" in a.text for a in refused), refused[0].text
    # one session (a browser tab, a gradio_client) has a smaller share than its address
    config = httpx.get(f"{server.url}config").json()
    fn_index = next(d.get("id", i) for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "generate")
    join = {"data": json.loads(slow_job)["data"], "fn_index": fn_index, "session_hash": "one-tab", "trigger_id": None}
    same = [
        httpx.post(f"{server.url}gradio_api/queue/join", json=join, headers={"X-Forwarded-For": "192.0.2.9"})
        for _ in range(MAX_PER_SESSION + 3)
    ]
    assert sum(r.status_code == 200 for r in same) == MAX_PER_SESSION, [r.text for r in same]
    assert all("You already have" in r.text for r in same if r.status_code != 200)
    # nobody reads the flood's results: they are dropped, and the flooder may queue again
    deadline = time.perf_counter() + 30
    while True:
        r = httpx.post(
            f"{server.url}gradio_api/call/generate",
            content=slow_job,
            headers={**flooder, "content-type": "application/json"},
        )
        if r.status_code == 200 or time.perf_counter() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints
# ----------------------------------------------------------------------------------------------


def truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def break_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"architecture": "gpt", "config": {"d_model": ')


def remove_tokenizer(folder: Path) -> None:
    for name in ("vocab.json", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)


DAMAGE = {
    "truncated-weights": (truncate_weights, "cut short"),
    "invalid-config": (break_config, "config.json is not valid JSON"),
    "missing-tokenizer": (remove_tokenizer, "tokenizer file"),
}


def copy_checkpoints(tmp_path: Path) -> Path:
    base = tmp_path / "checkpoints"
    for task in TASKS:
        shutil.copytree(ROOT / "checkpoints" / task, base / task)
    return base


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_found_without_loading_it(tmp_path, monkeypatch, task, damage):
    needs_checkpoints()
    if damage == "missing-tokenizer" and task in ("vision", "audio"):
        pytest.skip("this model has no tokenizer")
    base = copy_checkpoints(tmp_path)
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(base))
    assert common.has_checkpoint(task)
    spoil, message = DAMAGE[damage]
    spoil(base / task)
    assert message in (checkpoint_problem(base / task) or "")
    assert not common.has_checkpoint(task)
    assert "switched off" in common.missing_message(task) and message in common.missing_message(task)
    with pytest.raises(common.MissingCheckpoint, match="switched off"):
        common.get_model(task)


def test_a_model_first_asked_for_inside_inference_mode_still_works_with_autograd(tmp_path, monkeypatch):
    """Models load once per process for every caller; the first may be a tab inside inference_mode,
    and a later one (the Forward Pass trace, a test) may run the model with gradients on."""
    needs_checkpoints()
    shutil.copytree(ROOT / "checkpoints" / "generation", tmp_path / "generation")  # a folder not loaded yet
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path))
    with torch.inference_mode():
        model, tokenizer = common.get_model("generation")
    assert not any(t.is_inference() for t in [*model.parameters(), *model.buffers()])
    logits = model(torch.tensor([tokenizer.encode("ROMEO:")])).logits  # raised once tensors were inference ones
    assert logits.requires_grad


# each app start damages some models and leaves the others intact
BROKEN_APPS = {
    "config-and-weights": {"generation": "invalid-config", "vision": "truncated-weights", "audio": "invalid-config"},
    "tokenizer-and-weights": {"translation": "missing-tokenizer", "audio": "truncated-weights"},
}
CLEANUP_CHECKED_BY = "config-and-weights"  # one app waits for its uploads to be deleted (~12 s)
CALLS = {  # the API tools (demos/tools.py) exist whether or not a tab could be built
    "generation": ("next_characters", ["ROMEO:", 1.0]),
    "translation": ("translate_text", ["A dog runs.", "English", "German", 1]),
    "vision": ("classify_picture", None),
    "audio": ("classify_spoken_digit", None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BROKEN_APPS))
def test_the_app_starts_with_damaged_checkpoints_and_the_rest_works(tmp_path, name):
    needs_checkpoints()
    base = copy_checkpoints(tmp_path)
    for task, damage in BROKEN_APPS[name].items():
        DAMAGE[damage][0](base / task)
    env = {"PLAYGROUND_CHECKPOINTS": str(base), "PLAYGROUND_CACHE_CLEANUP": "2,10"}
    with AppServer(env=env) as app:
        picture, clip = tmp_path / "photo.png", tmp_path / "clip.wav"
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(picture)
        t = np.arange(4000) / 8000
        sf.write(clip, (0.3 * np.sin(2 * np.pi * 300 * t) * np.hanning(t.size)).astype(np.float32), 8000)
        files = {"vision": picture, "audio": clip}
        for task in TASKS:
            api, data = CALLS[task]
            if data is None:
                data = [{"path": upload(app.url, files[task]), "meta": {"_type": "gradio.FileData"}}]
            outcome = raw_call(app.url, api, data)
            if task in BROKEN_APPS[name]:  # its tool is left out (or says why it cannot run)
                assert outcome[0] == "refused" or "switched off" in outcome[1], (task, outcome)
            else:
                assert outcome[0] == "complete", (task, outcome)
        page = httpx.get(f"{app.url}config").text  # the tab itself says why it is switched off
        for task in BROKEN_APPS[name]:
            assert f"The {task} model is switched off" in page, task
        if name != CLEANUP_CHECKED_BY:
            return
        # uploads are deleted once older than the cleanup's age (10 s here)
        uploaded = upload(app.url, picture)
        assert Path(uploaded).exists()
        deadline = time.perf_counter() + 40
        while Path(uploaded).exists() and time.perf_counter() < deadline:
            time.sleep(0.5)
        assert not Path(uploaded).exists(), "an upload outlived the cache cleanup"
        # while the files the page itself shows (drawn examples, worked examples' images) stay
        shown = {path for path in re.findall(r'"path": ?"([^"]+)"', page) if not path.startswith(("http:", "https:"))}
        assert shown and all(Path(path).exists() for path in shown), "the cleanup took a file the page shows"


# ----------------------------------------------------------------------------------------------
# The checks themselves, without a server
# ----------------------------------------------------------------------------------------------


def test_value_checks_refuse_what_is_not_the_type_they_say():
    from demos.input_checks import InputRefused, check_bool, check_number, check_text

    assert check_number(3, "n") == 3 and check_number(-0.5, "n") == -0.5 and check_number(None, "n") is None
    for bad, says in (
        (10**400, "far too large"),
        (float("inf"), "finite"),
        (float("nan"), "finite"),
        (True, "a number"),
    ):
        with pytest.raises(InputRefused, match=says):
            check_number(bad, "Top-k")
    for text in ("1", "inf", [1], {"a": 1}):
        with pytest.raises(InputRefused, match="must be a number"):
            check_number(text, "Top-k")
    assert check_bool("false", "s") is False and check_bool(" TRUE ", "s") is True and check_bool(False, "s") is False
    for bad in (0, 1, "yes", None, "", [True]):
        with pytest.raises(InputRefused, match="true or false"):
            check_bool(bad, "Switch")
    assert check_text("héllo 🙂", "t") == "héllo 🙂" and check_text("x" * MAX_TEXT_CHARS, "t")
    for bad, says in (("a\ud800b", "lone surrogate"), ("x" * (MAX_TEXT_CHARS + 1), "at most"), (["x"], "not list")):
        with pytest.raises(InputRefused, match=says):
            check_text(bad, "Prompt")


def test_pages_are_gzipped_but_not_files_streams_or_what_is_encoded_already():
    """demos/compression.py on a small app: what Gradio leaves uncompressed (paths without a file
    extension) goes gzip'd; files (Gradio's BrotliMiddleware does those), result streams and
    responses with an encoding of their own pass as they are."""
    import gzip

    import brotli  # Gradio's own dependency
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, Response, StreamingResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from demos.compression import CompressPages

    text = "<p>a page of attention maps</p>" * 200

    def events(request):
        return StreamingResponse(iter(["data: 1\n\n", "data: 2\n\n"]), media_type="text/event-stream")

    routes = [
        Route("/", lambda r: HTMLResponse(text)),
        Route("/assets/app.js", lambda r: Response(text, media_type="application/javascript")),
        Route("/stream", events),
        Route("/encoded", lambda r: Response(brotli.compress(text.encode()), headers={"Content-Encoding": "br"})),
        Route("/tiny", lambda r: HTMLResponse("<p>hi</p>")),
    ]
    client = TestClient(CompressPages(Starlette(routes=routes)))
    accept = {"Accept-Encoding": "gzip"}
    page = client.get("/", headers=accept)
    assert page.headers["content-encoding"] == "gzip" and page.text == text  # httpx decodes it
    assert int(page.headers["content-length"]) < len(gzip.compress(text.encode())) + 100 < len(text) / 10
    assert "content-encoding" not in client.get("/", headers={"Accept-Encoding": "identity"}).headers
    for path in ("/assets/app.js", "/stream", "/tiny"):
        assert "content-encoding" not in client.get(path, headers=accept).headers, path
    assert client.get("/stream", headers=accept).text == "data: 1\n\ndata: 2\n\n"
    encoded = client.get("/encoded", headers=accept)
    assert encoded.headers["content-encoding"] == "br" and encoded.text == text


def test_only_paths_inside_the_upload_folder_are_accepted(tmp_path, monkeypatch):
    from demos.input_checks import InputRefused, uploaded_path

    uploads = tmp_path / "uploads"
    (uploads / "abc").mkdir(parents=True)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    good = uploads / "abc" / "photo.png"
    good.write_bytes(b"x")
    assert uploaded_path({"path": str(good)}) == str(good.resolve())
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (uploads / "abc" / "link.png").symlink_to(secret)  # a link inside the folder to a file outside
    refused = set()
    for path in (
        secret,
        tmp_path / "missing.txt",
        uploads / "abc" / "link.png",
        uploads / ".." / "secret.txt",
        uploads,
    ):
        with pytest.raises(InputRefused) as error:
            uploaded_path({"path": str(path)})
        refused.add(str(error.value))
    assert refused == {NOT_UPLOADED}  # the same sentence whether or not the file exists


def test_the_gatekeeper_refuses_large_bodies_even_when_the_app_would_swallow_the_error():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from demos.fair_queue import Gatekeeper

    async def echo(request: Request):
        try:  # like FastAPI's body parsing: any error while reading becomes a 400
            return JSONResponse({"bytes": len(await request.body())})
        except Exception:  # noqa: BLE001
            return JSONResponse({"detail": "There was an error parsing the body"}, status_code=400)

    app = Gatekeeper(Starlette(routes=[Route("/join", echo, methods=["POST"])]), max_body=1000)
    client = TestClient(app)
    assert client.post("/join", content=b"a" * 1000).json() == {"bytes": 1000}
    too_long = client.post("/join", content=b"a" * 1001)
    assert too_long.status_code == 413 and "larger than this app takes" in too_long.text

    def chunks():
        for _ in range(5):
            yield b"a" * 400

    streamed = client.post("/join", content=chunks())  # no Content-Length
    assert streamed.status_code == 413, streamed.text


def test_truncated_safetensors_header_and_data_are_told_apart(tmp_path):
    import torch
    from safetensors.torch import save_file

    from demos.checkpoint_checks import safetensors_problem

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(1000)}, str(path))
    assert safetensors_problem(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert "truncated" in safetensors_problem(path)
    path.write_bytes(data[:20])
    assert "cut short" in safetensors_problem(path)
    path.write_bytes(b"")
    assert "empty" in safetensors_problem(path)
