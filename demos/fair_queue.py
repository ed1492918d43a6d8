"""Each visitor's share of the public app's queue, and the size of what a request may send.

- `Gatekeeper`: an ASGI middleware that refuses request bodies over the limit before reading them,
  and notes which sessions are listening for their results.
- `FairQueue`: at most MAX_PER_SESSION requests per visitor (MAX_PER_ADDRESS per address) waiting
  or running, every visitor's first request served before anyone's second, and requests nobody
  listens for dropped from the queue.

The queue is Gradio's own; the few places that reach into its internals are the small functions
under "Gradio's queue" below, each saying what it relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter

from demos.housekeeping import release_memory

MAX_BODY_BYTES = 1024 * 1024  # a JSON request: 2,000 characters of text need a few KB
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # app.py's max_file_size; the upload route's body limit adds room for the form
MAX_PER_SESSION = 4  # requests one visitor (a browser tab, a gradio_client) may have waiting or running
MAX_PER_ADDRESS = 12  # and all visitors from one address (a classroom behind one router shares it)
UNHEARD_AFTER_S = 5.0  # a queued request whose session has not listened for this long is dropped


# ----------------------------------------------------------------------------------------------
# Who is asking, and who is listening
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
    """The session (or event) whose results a GET request streams, if it is such a request.

    Relies on Gradio's routes: a browser streams `/queue/data?session_hash=...`, gradio_client
    polls `/call/<api>/<event id>` and keeps `/heartbeat/<session hash>` open."""
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


# ----------------------------------------------------------------------------------------------
# Gradio's queue (gradio.queueing.Queue): the internals FairQueue relies on
# ----------------------------------------------------------------------------------------------


def replace_push(queue, push):
    """Route every request that joins the queue through `push`; returns Gradio's own method.

    Relies on `Queue.push(body, request, username)` being the one place a request joins the queue,
    returning (accepted, event id or message, error kind); it is replaced on this instance."""
    original = queue.push
    queue.push = push
    return original


def waiting_lines(queue) -> list[list]:
    """The queue's waiting lines (lists of events, in the order they will run), one per concurrency id.

    Relies on `Queue.event_queue_per_concurrency_id[id].queue`; reordering such a list in place
    (without an await in between) changes which request runs next."""
    return [event_queue.queue for event_queue in list(queue.event_queue_per_concurrency_id.values())]


def running_events(queue) -> list:
    """The events now running. Relies on `Queue.active_jobs`: a list of batches (None when free)."""
    return [event for job in list(queue.active_jobs) for event in job or []]


def queue_stopped(queue) -> bool:
    """Relies on `Queue.stopped`, set when the app closes."""
    return queue.stopped


async def cancel_running(event) -> None:
    """Cancel a running event's task: a streaming handler stops at its next step; others finish unseen.

    Relies on `gradio.utils.cancel_tasks`, which cancels the tasks Gradio named
    `<session hash>_<fn id><gradio-sep><event id>` by the part before the separator."""
    from gradio.utils import cancel_tasks

    await cancel_tasks({f"{event.session_hash}_{event.fn._id}"})


async def drop_event(queue, event) -> None:
    """Take an event out of the queue. Relies on `Queue.clean_events(event_id=...)`."""
    await queue.clean_events(event_id=event._id)


# ----------------------------------------------------------------------------------------------
# The fair queue
# ----------------------------------------------------------------------------------------------


class FairQueue:
    """Per-visitor limits on Gradio's queue, and a sweeper for requests nobody listens for.

    Gradio already drops a session's queued requests when its result stream closes; a client that
    joins the queue and never opens the stream is what this adds to that. Each event's
    `session_hash`, `_id`, `request` and `enqueue_time` are Gradio's own fields."""

    def __init__(self, queue, unheard_after_s: float = UNHEARD_AFTER_S) -> None:
        self.queue = queue
        self.unheard_after_s = unheard_after_s
        self._sweeper: asyncio.Task | None = None
        self._push = replace_push(queue, self.push)

    def events(self):
        """(event, running) for every request waiting or running."""
        for line in waiting_lines(self.queue):
            for event in list(line):
                yield event, False
        for event in running_events(self.queue):
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
        for line in waiting_lines(self.queue):
            seen = Counter(running)
            rounds = []
            for event in line:
                key = client_key(event.request)
                rounds.append(seen[key])
                seen[key] += 1
            order = sorted(range(len(line)), key=lambda i: rounds[i])
            line[:] = [line[i] for i in order]

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
        last_trim = 0.0
        while not queue_stopped(self.queue):
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for event, running in list(self.events()):
                if self.unheard(event, now):
                    if running:
                        await cancel_running(event)
                    await drop_event(self.queue, event)
            for key, when in list(HEARD.items()):
                if now - when > 600 and not LISTENING.get(key):
                    HEARD.pop(key, None)
            if now - last_trim > 10:
                last_trim = now
                await asyncio.to_thread(release_memory)
