"""What one visitor may cost the public app, decided before any expensive work starts.

- `check_inputs`: every value an event receives is checked against its component (text is a
  string of at most MAX_TEXT_CHARS characters with no lone surrogates, numbers are finite numbers,
  switches are booleans or "true"/"false", files are uploads) before Gradio or a tab touches it.
- `uploaded_path`: only files Gradio received as uploads are opened; any other path is refused
  with one message, whether it exists or not.
- `Gatekeeper`: an ASGI middleware that refuses request bodies over the limit before reading them,
  and notes which sessions are listening for their results.
- `FairQueue`: at most MAX_PER_SESSION requests per visitor (MAX_PER_ADDRESS per address) waiting
  or running; requests nobody
  listens for are dropped from the queue; freed memory is handed back to the system.
- `checkpoint_problem`: a checkpoint that is present but damaged is found without loading it.

app.py installs all of it (`protect`); a tab needs only `uploaded_path` where it reads raw uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

MAX_TEXT_CHARS = 2000  # longer than any model here reads (the translator takes ~128 tokens)
MAX_BODY_BYTES = 1024 * 1024  # a JSON request: 2,000 characters of text need a few KB
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # app.py's max_file_size; the upload route's body limit adds room for the form
MAX_MAGNITUDE = 1e15  # a number beyond this is nobody's setting (and 10**400 overflows a float)
MAX_PER_SESSION = 4  # requests one visitor (a browser tab, a gradio_client) may have waiting or running
MAX_PER_ADDRESS = 12  # and all visitors from one address (a classroom behind one router shares it)
UNHEARD_AFTER_S = 5.0  # a queued request whose session has not listened for this long is dropped
SESSIONS_KEPT = 256  # per-session state (gr.State) of at most this many sessions; the oldest go first
STATE_TTL_S = 900  # and a kept result (gr.State) is dropped 15 minutes after it was stored
# every 5 minutes, delete uploads and outputs older than 15 minutes ($PLAYGROUND_CACHE_CLEANUP="300,900")
CACHE_CLEANUP = tuple(int(v) for v in os.environ.get("PLAYGROUND_CACHE_CLEANUP", "300,900").split(","))

NOT_UPLOADED = "That file was not uploaded to this app. Upload it first (gradio_client: handle_file(path))."


class InputRefused(ValueError):
    """A value the app will not take; the message is meant for the person who sent it."""


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------


def short_label(component) -> str:
    """'Temperature (0 = always the most likely)' -> 'Temperature'."""
    label = str(getattr(component, "label", None) or type(component).__name__)
    return label.split(" (")[0].strip() or type(component).__name__


def check_text(value, name: str):
    """None or a string of at most MAX_TEXT_CHARS characters that is valid Unicode."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputRefused(f"{name} must be text, not {type(value).__name__}.")
    if len(value) > MAX_TEXT_CHARS:
        raise InputRefused(f"{name} is {len(value):,} characters long; this app takes at most {MAX_TEXT_CHARS:,}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputRefused(f"{name} contains a character that is not valid text (a lone surrogate).") from None
    return value


def check_number(value, name: str):
    """None or a finite int/float no larger than MAX_MAGNITUDE (no strings, no booleans)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputRefused(f"{name} must be a number, not {type(value).__name__} {str(value)[:40]!r}.")
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:  # checked before float() can overflow
        raise InputRefused(f"{name} is far too large (more than {MAX_MAGNITUDE:g}).")
    if not math.isfinite(value):
        raise InputRefused(f"{name} must be a finite number, not {value}.")
    if abs(value) > MAX_MAGNITUDE:
        raise InputRefused(f"{name} is far too large (more than {MAX_MAGNITUDE:g}).")
    return value


def check_bool(value, name: str) -> bool:
    """True/False, or the strings "true"/"false" in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputRefused(f"{name} must be true or false, not {str(value)[:40]!r}.")


def check_choice(value, name: str, multiselect: bool = False):
    """A dropdown/radio value: a string or number (Gradio checks it is one of the choices)."""
    if multiselect and isinstance(value, list):
        return [check_choice(v, name) for v in value]
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_number(value, name)
    return check_text(value, name)


def uploaded_path(payload) -> str:
    """The path of a file Gradio received as an upload (a FileData dict or a path string).

    Anything else (a path on the server, a URL, a path that escapes the upload folder through
    '..' or a link) gets the same InputRefused, whether or not such a file exists, so the
    answer says nothing about the server's files."""
    from gradio.utils import get_upload_folder

    path = payload.get("path") if isinstance(payload, dict) else payload
    if not isinstance(path, (str, Path)) or not str(path):
        raise InputRefused(NOT_UPLOADED)
    folder = os.path.realpath(get_upload_folder())
    real = os.path.realpath(str(path))
    if os.path.commonpath([folder, real]) != folder or real == folder:
        raise InputRefused(NOT_UPLOADED)
    return real


def check_file(value, name: str):
    """A file component's raw value: None, an upload, or (images) an inline data: URL."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputRefused(f"{name} must be an uploaded file, not {type(value).__name__}.")
    if value.get("path") is None and str(value.get("url") or "").startswith("data:"):
        return value  # an inline picture (webcam, clipboard); its size is bounded by MAX_BODY_BYTES
    uploaded_path(value)
    return value


def input_checks(fn) -> list:
    """One check per input of an event (a gradio BlockFunction), from its components, or for a
    `gr.api` function (whose inputs are bare `Api` components) from its type hints."""
    import typing

    import gradio as gr

    hints, names = {}, []
    if any(type(c).__name__ == "Api" for c in fn.inputs):
        try:
            hints = typing.get_type_hints(inspect_target(fn.fn))
        except Exception:  # noqa: BLE001 - no usable hints: the function checks its own values
            hints = {}
        names = [n for n in inspect_parameters(fn.fn) if n != "return"]
    checks = []
    for i, component in enumerate(fn.inputs):
        name = short_label(component)
        if isinstance(component, gr.Checkbox):
            checks.append((check_bool, name))
        elif isinstance(component, (gr.Number, gr.Slider)):
            checks.append((check_number, name))
        elif isinstance(component, (gr.Dropdown, gr.Radio)):
            multi = bool(getattr(component, "multiselect", False))
            checks.append((lambda v, n, multi=multi: check_choice(v, n, multi), name))
        elif isinstance(component, gr.Textbox):
            checks.append((check_text, name))
        elif isinstance(component, (gr.Image, gr.Audio, gr.File, gr.Video)):
            checks.append((check_file, name))
        elif type(component).__name__ == "Api" and i < len(names):
            hint = hints.get(names[i])
            kind = getattr(hint, "__name__", str(hint))
            check = {"str": check_text, "int": check_number, "float": check_number, "bool": check_bool}.get(kind)
            checks.append((check_file if kind == "FileData" else check, names[i]))
        else:
            checks.append((None, name))  # gr.State and the like: nothing the client sends
    return checks


def inspect_target(fn):
    """The function behind decorators that used functools.wraps."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def inspect_parameters(fn) -> list[str]:
    import inspect

    return list(inspect.signature(inspect_target(fn)).parameters)


def check_inputs(checks: list, inputs: list) -> list:
    """Raw event inputs (as the client sent them) -> the same list with switches as booleans.
    Raises InputRefused naming the first value that is refused."""
    checked = list(inputs)
    for i, ((check, name), value) in enumerate(zip(checks, inputs, strict=False)):
        if check is not None:
            checked[i] = check(value, name)
    return checked


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------


def trust_forwarded() -> bool:
    """A Space's proxy sets X-Forwarded-For (SPACE_ID is set there); elsewhere anyone could."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("PLAYGROUND_TRUST_FORWARDED") == "1"


def client_key(request) -> str:
    """Who sent a request: the first address of X-Forwarded-For behind a Space's proxy, else the
    socket's address."""
    if request is None:
        return "unknown"
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for", "") if trust_forwarded() else ""
    if forwarded.strip():
        return forwarded.split(",")[0].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


LISTENING: Counter[str] = Counter()  # session hash or event id -> open result streams
HEARD: dict[str, float] = {}  # session hash or event id -> when a stream last opened or closed


def _listener(scope) -> str | None:
    """The session (or event) whose results a GET request streams, if it is such a request."""
    if scope.get("method") != "GET":
        return None
    path = scope.get("path", "")
    if path.endswith("/queue/data"):
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
        return (query.get("session_hash") or [None])[0]
    if "/call/" in path or "/heartbeat/" in path:  # a browser or gradio_client keeps a heartbeat open
        return path.rstrip("/").rsplit("/", 1)[-1]
    return None


class Gatekeeper:
    """ASGI middleware: bodies over the limit get 413 before they are read (by Content-Length,
    or as soon as a body without one grows past it); result streams are counted per session."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES, max_upload: int = MAX_UPLOAD_BYTES) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload + 64 * 1024  # the multipart form around the file

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope.get("path", "").endswith("/upload") else self.max_body
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self._refuse(send, limit)
        listener = _listener(scope)
        if listener:
            LISTENING[listener] += 1
            HEARD[listener] = time.monotonic()
        received = 0
        too_large = started = False

        async def counted_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def watched_send(message):
            nonlocal started
            if too_large:  # the app caught BodyTooLarge and answers something else: say what happened
                if not started:
                    started = True
                    await self._refuse(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, limit)
        finally:
            if listener:
                LISTENING[listener] -= 1
                HEARD[listener] = time.monotonic()
                if LISTENING[listener] <= 0:
                    del LISTENING[listener]

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        body = json.dumps({"detail": f"The request is larger than this app takes ({limit // 1024:,} KB)."}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


class FairQueue:
    """Per-visitor limits on Gradio's queue, and a sweeper for requests nobody listens for.

    Gradio already drops a session's queued requests when its result stream closes; a client that
    joins the queue and never opens the stream is what this adds to that."""

    def __init__(self, queue, unheard_after_s: float = UNHEARD_AFTER_S) -> None:
        self.queue = queue
        self.unheard_after_s = unheard_after_s
        self._push = queue.push
        self._sweeper: asyncio.Task | None = None
        queue.push = self.push

    def events(self):
        """(event, running) for every request waiting or running."""
        for event_queue in list(self.queue.event_queue_per_concurrency_id.values()):
            for event in list(event_queue.queue):
                yield event, False
        for job in list(self.queue.active_jobs):
            for event in job or []:
                yield event, True

    async def push(self, body, request, username):
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self.sweep())
        key = client_key(request)
        events = [event for event, _ in self.events()]
        session = sum(event.session_hash == body.session_hash for event in events) if body.session_hash else 0
        address = sum(client_key(event.request) == key for event in events)
        if session >= MAX_PER_SESSION or address >= MAX_PER_ADDRESS:
            mine, most = (session, MAX_PER_SESSION) if session >= MAX_PER_SESSION else (address, MAX_PER_ADDRESS)
            who = "You already have" if session >= MAX_PER_SESSION else "Your address already has"
            message = (
                f"{who} {mine} requests waiting or running (at most {most}); wait for their results, then try again."
            )
            return False, message, "queue_full"
        pushed = await self._push(body=body, request=request, username=username)
        self.interleave()
        return pushed

    def interleave(self) -> None:
        """Reorder each waiting line so that every visitor's first request comes before anyone's
        second (and so on), first come first served within each round: a visitor who sends many
        requests waits behind them, not everyone else. (No await here: the queue's loop sees the
        line either before or after, never half reordered.)"""
        running = Counter(client_key(event.request) for event, on in self.events() if on)
        for event_queue in self.queue.event_queue_per_concurrency_id.values():
            seen = Counter(running)
            rounds = []
            for event in event_queue.queue:
                key = client_key(event.request)
                rounds.append(seen[key])
                seen[key] += 1
            order = sorted(range(len(event_queue.queue)), key=lambda i: rounds[i])
            event_queue.queue[:] = [event_queue.queue[i] for i in order]

    def unheard(self, event, now: float) -> bool:
        if now - event.enqueue_time < self.unheard_after_s:
            return False
        if LISTENING.get(event.session_hash) or LISTENING.get(event._id):
            return False
        last = max(HEARD.get(event.session_hash, 0.0), HEARD.get(event._id, 0.0))
        return now - last > self.unheard_after_s

    async def sweep(self) -> None:
        """Every second: drop requests nobody is listening for (waiting or running); now and
        then, return freed memory to the system."""
        from gradio.utils import cancel_tasks

        last_trim = 0.0
        while not self.queue.stopped:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for event, running in list(self.events()):
                if self.unheard(event, now):
                    if running:  # a streaming handler stops at its next step; others finish unseen
                        await cancel_tasks({f"{event.session_hash}_{event.fn._id}"})
                    await self.queue.clean_events(event_id=event._id)
            for key, when in list(HEARD.items()):
                if now - when > 600 and not LISTENING.get(key):
                    HEARD.pop(key, None)
            if now - last_trim > 10:
                last_trim = now
                await asyncio.to_thread(release_memory)


def release_memory() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise, so the resident
    memory of a long-running server only grows)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own heap (arena); with Gradio's many worker
    threads they fragment and hold memory. Two are plenty for two cores."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


def protect(demo) -> None:
    """Install the input checks, the fair queue and the cache cleanup on a built, queued app."""
    import gradio as gr

    limit_malloc_arenas()
    demo.delete_cache = CACHE_CLEANUP
    for block in demo.blocks.values():
        if isinstance(block, gr.State) and block.time_to_live is None:
            block.time_to_live = STATE_TTL_S
    FairQueue(demo._queue)
    process_api = demo.process_api
    checks: dict = {}  # BlockFunction -> its input checks

    async def checked_process_api(block_fn, inputs, *args, **kwargs):
        import gradio as gr

        fn = demo.fns[block_fn] if isinstance(block_fn, int) else block_fn
        if fn not in checks:
            checks[fn] = input_checks(fn)
        try:
            inputs = check_inputs(checks[fn], inputs)
        except InputRefused as err:
            raise gr.Error(str(err)) from None
        return await process_api(block_fn, inputs, *args, **kwargs)

    demo.process_api = checked_process_api


def launch_options() -> dict:
    """demo.launch() arguments that bound uploads, request bodies and kept sessions."""
    from starlette.middleware import Middleware

    return {
        "max_file_size": MAX_UPLOAD_BYTES,
        "state_session_capacity": SESSIONS_KEPT,
        "app_kwargs": {"middleware": [Middleware(Gatekeeper)]},
    }


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

_checked: dict[tuple, str | None] = {}
_checked_lock = threading.Lock()
TOKENIZED = ("gpt", "encoder_decoder", "bert")  # architectures that need a tokenizer file


def _fingerprint(folder: Path) -> tuple:
    files = []
    for name in ("config.json", "model.safetensors", "vocab.json", "tokenizer.json"):
        try:
            stat = (folder / name).stat()
            files.append((name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            files.append((name, None, None))
    return (str(folder), *files)


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read (its header, or its size against the header), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        if len(start) < 8:
            return "the weights file is empty or cut short"
        (header_len,) = struct.unpack("<Q", start)
        if header_len > min(size - 8, 100 * 1024 * 1024):
            return "the weights file is cut short or is not a safetensors file"
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "the weights file's header is damaged"
    if not isinstance(header, dict):
        return "the weights file's header is damaged"
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t
    ]
    if 8 + header_len + max(ends, default=0) > size:
        return "the weights file is cut short (truncated)"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """What is wrong with a checkpoint folder that is present (config.json and model.safetensors
    exist), found without loading it: unreadable config, truncated weights, a missing or unreadable
    tokenizer, a config that does not build. None when it looks usable. Cached per file state."""
    folder = Path(folder)
    key = _fingerprint(folder)
    if key in _checked:
        return _checked[key]
    with _checked_lock:
        problem = _checkpoint_problem(folder)
        _checked[key] = problem
    return problem


def _checkpoint_problem(folder: Path) -> str | None:
    from models.checkpoint import ARCHITECTURES

    try:
        info = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its config.json is not valid JSON"
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        return "its config.json has no model config"
    architecture = info.get("architecture")
    if architecture not in ARCHITECTURES:
        return f"its config.json names an unknown architecture ({str(architecture)[:40]!r})"
    problem = safetensors_problem(folder / "model.safetensors")
    if problem:
        return problem
    if architecture in TOKENIZED:
        names = [n for n in ("vocab.json", "tokenizer.json") if (folder / n).exists()]
        if not names:
            return "its tokenizer file (vocab.json or tokenizer.json) is missing"
        try:
            json.loads((folder / names[0]).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return f"its {names[0]} is damaged"
    if architecture != "vit":  # building timm's ViT would import timm (~2 s); its load reports instead
        from models.checkpoint import build_model

        try:  # these models are small (< 2M parameters): building one takes milliseconds
            build_model(architecture, info["config"])
        except Exception as err:  # noqa: BLE001 - any failure means the config does not describe a model
            return f"its config.json does not describe a model that can be built ({type(err).__name__})"
    return None


# ----------------------------------------------------------------------------------------------
# Audio files: the header decides what is read, before any decoding
# ----------------------------------------------------------------------------------------------

MAX_AUDIO_SECONDS = 60.0  # a spoken digit lasts a second; a minute leaves room for silence around it
MAX_AUDIO_FRAMES = 2_000_000  # frames decoded at the file's own rate (10 s at 192 kHz, 45 s at 44.1 kHz)
MAX_AUDIO_CHANNELS = 32
AUDIO_RATES = (1000, 768_000)  # Hz: what a real recording uses
DECODE_BLOCK_SAMPLES = 1 << 20  # samples (frames x channels) decoded at once, mixed to mono at once


def read_audio_file(path: str | Path) -> tuple[int, np.ndarray, list[str]]:
    """An uploaded audio file -> (sample rate, float32 mono samples, notes). Raises InputRefused.

    The header (soundfile.info) is checked first: its rate, its channel count and how much of it
    the model could use set how many frames are decoded, whatever the file claims to hold. Frames
    are decoded in blocks and mixed to mono block by block, so memory is that of one channel."""
    import soundfile as sf

    from models.audio import RoutineNote

    path = Path(path)
    name = path.name
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as err:
        raise InputRefused(
            f"{name} is not an audio file that can be read (try WAV, FLAC or OGG; MP3 may also work)."
        ) from err
    rate, channels = int(info.samplerate), int(info.channels)
    if not AUDIO_RATES[0] <= rate <= AUDIO_RATES[1]:
        raise InputRefused(
            f"{name} says its sample rate is {rate} Hz; a recording's rate is {AUDIO_RATES[0] // 1000} kHz "
            f"to {AUDIO_RATES[1] // 1000} kHz."
        )
    if not 1 <= channels <= MAX_AUDIO_CHANNELS:
        raise InputRefused(f"{name} has {channels} channels; this app reads recordings of 1 to {MAX_AUDIO_CHANNELS}.")
    frames = max(0, int(info.frames))
    wanted = min(frames, int(MAX_AUDIO_SECONDS * rate), MAX_AUDIO_FRAMES)
    notes: list[str] = []
    if wanted < frames:
        notes.append(
            f"The file lasts {frames / rate / 60:.1f} minutes; only its first {wanted / rate:.0f} s were read "
            "(a spoken digit takes about one)."
        )
    mono = np.empty(wanted, dtype=np.float32)
    filled = 0
    block = np.empty((max(1, min(wanted, DECODE_BLOCK_SAMPLES // channels)), channels), dtype=np.float32)
    try:
        with sf.SoundFile(str(path)) as f:
            while filled < wanted:
                out = block[: min(len(block), wanted - filled)]
                out.fill(np.nan)
                try:
                    n = len(f.read(len(out), dtype="float32", always_2d=True, out=out))
                except (sf.LibsndfileError, RuntimeError):
                    # a file shorter than its header says: soundfile raises after decoding what
                    # there is (seeking past the end), so keep the rows it wrote (NaN marks the rest)
                    finite = np.flatnonzero(np.isfinite(out).any(axis=1))
                    if filled == 0 and finite.size == 0:
                        raise
                    n = int(finite[-1]) + 1 if finite.size else 0
                    wanted = filled + n
                    notes = [note for note in notes if not note.startswith("The file lasts")]  # it does not
                    notes.append(
                        f"{name} ends before its header says; the {(filled + n) / rate:.1f} s it holds were read."
                    )
                if n == 0:
                    break
                mono[filled : filled + n] = out[:n].mean(axis=1) if channels > 1 else out[:n, 0]
                filled += n
    except (sf.LibsndfileError, RuntimeError) as err:
        raise InputRefused(f"{name} is damaged or incomplete and could not be decoded.") from err
    if channels > 1:
        notes.append(RoutineNote(f"Mixed {channels} channels down to mono."))
    return rate, mono[:filled], notes
