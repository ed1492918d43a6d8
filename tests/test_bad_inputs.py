"""Everything a person (or an API client) can get wrong, sent to the running app through
gradio_client: each bad input gets a sentence that says what is wrong (a gr.Error, which the
client raises as AppError with that sentence, or a note/warning beside a result), never a
traceback or a hang, and the next good request to the same endpoint still works.

The lists follow the tabs (generation, translation, image, audio), plus the attention
tabs, wrong types and an oversized upload."""

from __future__ import annotations

import io
import re
import struct
import urllib.error
import urllib.request
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demos import vision
from tests.app_server import ROOT

pytestmark = pytest.mark.slow  # the shared app (tests/conftest.py), ~0.2 s per case

TIMEOUT_S = 60  # a request slower than this is a hang
MAX_UPLOAD = 20 * 1024 * 1024  # app.py: max_file_size="20mb"
# what a crash looks like from outside: Gradio's stand-in for an exception that is not a gr.Error
NOT_A_SENTENCE = re.compile(r"Traceback|upstream Gradio app has raised an exception|File \"|Error\(|Exception\(")


@dataclass(frozen=True)
class Upload:
    """A file argument: the name of one of the files `bad_files` writes."""

    name: str


@dataclass(frozen=True)
class Case:
    endpoint: str
    args: tuple
    message: str  # regex: the error's sentence, or for notes a text the result or its warnings hold
    note: bool = False  # True: a result with a note/warning; False: refused with a gr.Error


GOOD = {
    "/generate": ("ROMEO:", 5, 0.8, 65, 1.0, 0, True),
    "/next_token": ("ROMEO:", 1.0, 65, 1.0),
    "/translate": ("A dog runs.", "English", "German", 1, "average", "average"),
    "/classify_image": (Upload("good.png"), "average", "average", vision.OURS),
    "/classify_audio": (Upload("good.wav"), "rollout (all layers)", "mean of heads"),
    "/attention_map": ("generation", "causal self", "average", "average", "hi there", "de", None, None),
    "/attention_lab": ("the cat sat", "random", "causal", True, 1),
}


def generate(prompt="ROMEO:", n=5, temperature=0.8, top_k=65, top_p=1.0, seed=0, cache=True) -> tuple:
    return (prompt, n, temperature, top_k, top_p, seed, cache)


def translate(text="A dog runs.", source="English", target="German", beam=2, layer="average", head="average"):
    return (text, source, target, beam, layer, head)


def image(upload, layer="average", head="average", model=vision.OURS) -> tuple:
    return (upload if upload is None or not isinstance(upload, str) else Upload(upload), layer, head, model)


def audio(upload, layer="rollout (all layers)", head="mean of heads") -> tuple:
    return (upload if upload is None or not isinstance(upload, str) else Upload(upload), layer, head)


def attention_map(task="generation", kind="causal self", layer="average", head="average", text="hi", **files):
    return (task, kind, layer, head, text, files.get("target", "de"), files.get("image"), files.get("audio"))


def lab(text="the cat sat", source="random", mask="causal", scaled=True, head=1) -> tuple:
    return (text, source, mask, scaled, head)


CASES = {
    # --- Generate: empty, too long, unknown characters, absurd sliders through the API
    "gen-empty-prompt": Case("/generate", generate(""), "prompt is empty", note=True),
    "gen-none-prompt": Case("/generate", generate(None), "prompt is empty", note=True),
    "gen-prompt-over-context": Case("/generate", generate("To be or not. " * 60), "continues from the last", True),
    "gen-unknown-characters": Case("/generate", generate("ROMEO: 你好 🙂"), "never saw in Shakespeare", True),
    "gen-only-unknown": Case("/generate", generate("🙂🙂🙂"), "never saw in Shakespeare", True),
    "gen-number-prompt": Case("/generate", generate(12345), "Prompt must be text, not int"),
    "gen-temperature-huge": Case("/generate", generate(temperature=1e9), "Temperature .* is outside", True),
    "gen-temperature-negative": Case("/generate", generate(temperature=-1), "Temperature .* is outside", True),
    "gen-temperature-text": Case("/generate", generate(temperature="hot"), "Temperature must be a number"),
    "gen-temperature-nan": Case("/generate", generate(temperature="nan"), "Temperature must be a number"),
    "gen-top-k-zero": Case("/generate", generate(top_k=0), "Top-k 0 is below 1", True),
    "gen-top-k-huge": Case("/generate", generate(top_k=10**6), "more than the .* characters", True),
    "gen-top-p-above-one": Case("/generate", generate(top_p=5), "Top-p 5 is outside", True),
    "gen-top-p-negative": Case("/generate", generate(top_p=-1), "Top-p -1 is outside", True),
    "gen-length-zero": Case("/generate", generate(n=0), "Max new tokens 0 is outside", True),
    "gen-length-huge": Case("/generate", generate(n=10**9), "Max new tokens 1e\\+09 is outside", True),
    "gen-length-text": Case("/generate", generate(n="lots"), "Max new tokens must be a number"),
    "gen-seed-negative": Case("/generate", generate(seed=-5), "seed must be a whole number"),
    "gen-seed-fraction": Case("/generate", generate(seed=1.5), "seed must be a whole number"),
    "gen-seed-huge": Case("/generate", generate(seed=2**40), "seed must be a whole number"),
    "gen-seed-text": Case("/generate", generate(seed="abc"), "Seed must be a number"),
    "gen-cache-text": Case("/generate", generate(cache="maybe"), "KV cache must be true or false"),
    "next-token-temperature-text": Case("/next_token", ("hi", "abc", 65, 1.0), "Temperature must be a number"),
    "next-token-top-p-text": Case("/next_token", ("hi", 1.0, 65, "x"), "Top-p must be a number"),
    # --- Translate: empty, too long, same languages, emoji/other scripts, long words
    "tr-empty": Case("/translate", translate(""), "nothing to translate"),
    "tr-whitespace": Case("/translate", translate("   \n\t  "), "nothing to translate"),
    "tr-none": Case("/translate", translate(None), "nothing to translate"),
    "tr-over-length": Case("/translate", translate("A dog runs in the park. " * 40), "only the beginning", True),
    "tr-same-languages": Case("/translate", translate(target="English"), "both English"),
    "tr-emoji-only": Case("/translate", translate("🙂🐶🎸"), "cannot read any of this text"),
    "tr-chinese": Case("/translate", translate("我爱你"), "cannot read any of this text"),
    "tr-cyrillic": Case("/translate", translate("Привет мир"), "cannot read any of this text"),
    "tr-some-emoji": Case("/translate", translate("A dog 🐶 runs."), "never seen", True),
    "tr-very-long-word": Case("/translate", translate("Donaudampfschifffahrtsgesellschaftskapitän"), "Very long", True),
    "tr-unknown-language": Case("/translate", translate(source="Klingon"), "Klingon"),
    "tr-beam-zero": Case("/translate", translate(beam=0), "[Bb]eam size|less than minimum value 1"),
    "tr-beam-huge": Case("/translate", translate(beam=99), "[Bb]eam size|greater than maximum value 8"),
    "tr-beam-text": Case("/translate", translate(beam="abc"), "[Bb]eam size must be"),
    "tr-layer-unknown": Case("/translate", translate(layer="7"), "[Ll]ayer.*7|7.*layer|7 is not in the list"),
    # --- Image: not an image, corrupt, huge, tiny, every odd mode, animation
    "img-not-an-image": Case("/classify_image", image("text.png"), "not an image that can be read"),
    "img-empty-file": Case("/classify_image", image("empty.png"), "not an image that can be read"),
    "img-corrupt": Case("/classify_image", image("truncated.png"), "damaged or incomplete"),
    "img-huge-10000x10000": Case("/classify_image", image("huge.png"), "10000x10000 pixels .* refused"),
    "img-audio-file": Case("/classify_image", image("good.wav"), "not an image that can be read"),
    "img-none": Case("/classify_image", image(None), "Upload a photo"),
    "img-1x1": Case("/classify_image", image("1x1.png"), "only 1x1 pixels", note=True),
    "img-greyscale": Case("/classify_image", image("grey.png"), "Greyscale image", note=True),
    "img-rgba": Case("/classify_image", image("rgba.png"), "Transparent areas", note=True),
    "img-palette": Case("/classify_image", image("palette.png"), "Transparent areas", note=True),
    "img-16-bit": Case("/classify_image", image("16bit.png"), "High bit depth", note=True),
    "img-cmyk": Case("/classify_image", image("cmyk.jpg"), "CMYK image", note=True),
    "img-animated-gif": Case("/classify_image", image("animated.gif"), "Animated image", note=True),
    "img-layer-unknown": Case("/classify_image", image("good.png", layer="layer 9"), "layer must be 'average'"),
    "img-head-text": Case("/classify_image", image("good.png", head="banana"), "head must be 'average'"),
    "img-model-unknown": Case("/classify_image", image("good.png", model="resnet"), "Unknown model 'resnet'"),
    # the app under test is offline (HF_HUB_OFFLINE=1): the pretrained choice says what it needs
    "img-pretrained-offline": Case(
        "/classify_image", image("good.png", model=vision.IMAGENET), "needs the network once.*works offline"
    ),
    # --- Audio: empty, silence, too long, NaN/inf, not audio, bit depths, channels
    "audio-not-audio": Case("/classify_audio", audio("text.png"), "not an audio file that can be read"),
    "audio-image-file": Case("/classify_audio", audio("good.png"), "not an audio file that can be read"),
    "audio-zero-length": Case("/classify_audio", audio("empty.wav"), "audio is empty"),
    "audio-silence": Case("/classify_audio", audio("silence.wav"), "audio is silent"),
    "audio-nan": Case("/classify_audio", audio("nan.wav"), "NaN or infinite"),
    "audio-inf": Case("/classify_audio", audio("inf.wav"), "NaN or infinite"),
    "audio-none": Case("/classify_audio", audio(None), "No audio"),
    "audio-eleven-minutes": Case("/classify_audio", audio("long.wav"), "only its first 60 s were read", note=True),
    "audio-10-ms": Case("/classify_audio", audio("short.wav"), "only 10 ms long", note=True),
    "audio-clipped": Case("/classify_audio", audio("clipped.wav"), "clipped", note=True),
    "audio-8-bit": Case("/classify_audio", audio("u8.wav"), "Heard", note=True),
    "audio-24-bit": Case("/classify_audio", audio("24bit.wav"), "Heard", note=True),
    "audio-32-bit": Case("/classify_audio", audio("32bit.wav"), "Heard", note=True),
    "audio-float64": Case("/classify_audio", audio("double.wav"), "Heard", note=True),
    "audio-six-channels": Case("/classify_audio", audio("six.wav"), "Mixed", note=True),
    "audio-192-khz": Case("/classify_audio", audio("192k.wav"), "Resampled from 192000 Hz", note=True),
    "audio-layer-unknown": Case("/classify_audio", audio("good.wav", layer="layer 99"), "not in the list of choices"),
    # --- Attention Maps
    "map-unknown-model": Case("/attention_map", attention_map("nope"), "Unknown model 'nope'"),
    "map-wrong-kind": Case("/attention_map", attention_map(kind="cross"), "has no 'cross' attention"),
    "map-layer-too-big": Case("/attention_map", attention_map(layer="99"), "Layer 99 does not exist"),
    "map-head-text": Case("/attention_map", attention_map(head="abc"), "numbers from 1 or 'average'"),
    "map-empty-text": Case("/attention_map", attention_map(text=""), "Type some text"),
    "map-empty-sentence": Case(
        "/attention_map", attention_map("translation", "cross", text="  "), "Type a sentence|Type some text"
    ),
    "map-unknown-target": Case(
        "/attention_map",
        attention_map("translation", "cross", target="xx"),
        "cannot translate into .xx.|xx is not in the list of choices",
    ),
    "map-no-image": Case("/attention_map", attention_map("vision", "rollout"), "Upload an image first"),
    "map-no-audio": Case("/attention_map", attention_map("audio", "rollout"), "Record or upload a clip"),
    "map-not-an-image": Case(
        "/attention_map", attention_map("vision", "rollout", image=Upload("text.png")), "not an image that can be read"
    ),
    "map-not-audio": Case(
        "/attention_map", attention_map("audio", "rollout", audio=Upload("text.png")), "not an audio file"
    ),
    # --- Attention Lab
    "lab-empty-text": Case("/attention_lab", lab(""), "Type a few words"),
    "lab-none-text": Case("/attention_lab", lab(None), "Type a few words"),
    "lab-head-missing": Case("/attention_lab", lab(head=5), "Head 5 does not exist"),
    "lab-head-text": Case("/attention_lab", lab(head="x"), "head must be a number"),
    "lab-head-fraction": Case("/attention_lab", lab(head=1.5), "head must be a whole number"),
    "lab-unknown-mask": Case("/attention_lab", lab(mask="diagonal"), "Unknown mask|not in the list of choices"),
    "lab-unknown-layer": Case("/attention_lab", lab(source="nope"), "Unknown layer|not in the list of choices"),
    "lab-long-text": Case("/attention_lab", lab("one two three " * 10), "Using the first 16 of 30", note=True),
}


# ----------------------------------------------------------------------------------------------
# The bad files, written once
# ----------------------------------------------------------------------------------------------


def tiny_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds no image data: opening it costs nothing,
    decoding it is what a 10000x10000 upload would cost."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def voice(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    photo.save(folder / "good.png")
    (folder / "text.png").write_text("this is a text file, not a picture\n")
    (folder / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "huge.png").write_bytes(tiny_png_header(10000, 10000))
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "1x1.png")
    photo.convert("L").save(folder / "grey.png")
    photo.convert("RGBA").save(folder / "rgba.png")
    palette = photo.convert("P")
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16)).save(folder / "16bit.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)

    sf.write(folder / "good.wav", voice(0.6, 8000), 8000)
    sf.write(folder / "empty.wav", np.zeros(0, np.float32), 8000)
    sf.write(folder / "silence.wav", np.zeros(8000, np.float32), 8000)
    broken = voice(1.0, 8000)
    broken[100:200] = np.nan
    sf.write(folder / "nan.wav", broken, 8000, subtype="FLOAT")
    broken = voice(1.0, 8000)
    broken[300] = np.inf
    sf.write(folder / "inf.wav", broken, 8000, subtype="FLOAT")
    long = 0.001 * rng.standard_normal(11 * 60 * 2000).astype(np.float32)  # 11 minutes at 2 kHz: 2.6 MB
    long[60_000:61_000] += voice(0.5, 2000)
    sf.write(folder / "long.wav", long, 2000, subtype="PCM_16")
    sf.write(folder / "short.wav", voice(0.01, 8000), 8000)
    sf.write(folder / "clipped.wav", np.clip(20 * voice(0.6, 8000), -1, 1), 8000, subtype="FLOAT")
    for name, subtype in (
        ("u8.wav", "PCM_U8"),
        ("24bit.wav", "PCM_24"),
        ("32bit.wav", "PCM_32"),
        ("double.wav", "DOUBLE"),
    ):
        sf.write(folder / name, voice(0.6, 16000), 16000, subtype=subtype)
    sf.write(folder / "six.wav", np.tile(voice(0.6, 8000)[:, None], (1, 6)), 8000)
    sf.write(folder / "192k.wav", voice(0.6, 192000), 192000)
    return folder


# ----------------------------------------------------------------------------------------------
# Calling the app
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request):
    if not all(
        (ROOT / "checkpoints" / t / "model.safetensors").exists()
        for t in ("generation", "translation", "vision", "audio")
    ):
        pytest.skip("needs the four shipped checkpoints in checkpoints/")
    return request.getfixturevalue("app_server")


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


def call(client: Client, endpoint: str, args: tuple, files: Path) -> tuple[object, list[str]]:
    """(outputs or the exception raised, warning messages shown along the way)."""
    args = tuple(handle_file(str(files / a.name)) if isinstance(a, Upload) else a for a in args)
    job = client.submit(*args, api_name=endpoint)
    try:
        result = job.result(timeout=TIMEOUT_S)
    except TimeoutError:
        pytest.fail(f"{endpoint} hung for more than {TIMEOUT_S} s")
    except Exception as error:  # noqa: BLE001 - the test inspects it
        result = error
    warnings = []
    updates = job.communicator.updates if job.communicator else None
    while updates is not None and not updates.empty():
        update = updates.get_nowait()
        if getattr(update, "log", None):
            warnings.append(update.log[0])
    return result, warnings


def assert_good_request_works(client: Client, endpoint: str, files: Path) -> None:
    result, _ = call(client, endpoint, GOOD[endpoint], files)
    assert not isinstance(result, Exception), f"a good request after the bad one failed: {result}"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_clear_message(client, bad_files, name):
    case = CASES[name]
    result, warnings = call(client, case.endpoint, case.args, bad_files)
    if case.note:
        assert not isinstance(result, Exception), f"expected a result with a note, got {result!r}"
        shown = " ".join(map(str, result if isinstance(result, tuple) else [result])) + " " + " ".join(warnings)
        assert re.search(case.message, shown), f"no note matching {case.message!r} in the result or its warnings"
    else:
        assert isinstance(result, AppError), f"expected a gr.Error, got {str(result)[:300]!r}"
        assert not NOT_A_SENTENCE.search(str(result)), f"not a sentence for a person: {result}"
        assert re.search(case.message, str(result)), f"{str(result)!r} does not say {case.message!r}"
    assert_good_request_works(client, case.endpoint, bad_files)


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize(
    ("endpoint", "args"),
    [
        ("/classify_image", ("hello", "average", "average", vision.OURS)),
        ("/classify_image", (5, "average", "average", vision.OURS)),
        ("/classify_audio", ("hello", "rollout (all layers)", "mean of heads")),
        ("/attention_map", ("vision", "rollout", "average", "average", "", "de", {"path": 3}, None)),
    ],
    ids=["image-as-text", "image-as-number", "audio-as-text", "map-image-as-dict"],
)
def test_a_file_parameter_given_something_else_is_refused(client, bad_files, endpoint, args):
    """Gradio itself checks file payloads before any of our code runs; its refusal is generic
    (there is no hook to word it), but the request fails cleanly and the app carries on."""
    result, _ = call(client, endpoint, args, bad_files)
    assert isinstance(result, AppError)
    assert "Traceback" not in str(result)
    assert_good_request_works(client, endpoint, bad_files)


def test_an_upload_over_the_limit_is_refused(server, client, bad_files, tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_UPLOAD + 1024)  # sparse: no 20 MB written to disk
    # gradio_client checks the app's limit before sending
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), "average", "average", api_name="/classify_image")
    # and the server refuses it from any other client (here: a plain multipart POST)
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + big.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        server.url + "gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=TIMEOUT_S)
    assert refused.value.code == 413
    assert "20" in refused.value.read().decode(errors="replace")
    assert_good_request_works(client, "/classify_image", bad_files)
