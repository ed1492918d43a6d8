"""Load test: many people using the app at once, through gradio_client as the browser's API does.

    python -m bench.load [--clients 20] [--requests 50] [--url http://127.0.0.1:7860/]
                         [--env PLAYGROUND_CONCURRENCY=2 ...] [--flood 70] [--no-hostile]

Without --url it starts `python app.py` itself (with the --env settings; each simulated client
has an address of its own through X-Forwarded-For, as behind a Space's proxy) and samples the
server's resident memory every half second. Three phases:

1. mixed: each client sends its requests one after another, a seeded mix of every endpoint
   (streamed generation, translation, image and audio classification, attention maps, the
   attention lab). Every request must succeed.
2. hostile: one of each attack tests/test_hostile.py makes (odd-rate WAV, 8-channel 192 kHz
   FLAC, a FLAC whose header claims hours, a 16 MB body, an overlong text, a foreign path,
   10**400): each must be answered (refused or handled) quickly; the slowest is reported.
3. flood: one address posts --flood requests at once and never reads them, while another
   visitor translates five sentences one after another; their wait is reported.

Prints p50/p95 latency per endpoint, errors, throughput, memory at start / peak / after the run
(after 20 s idle), then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from demos import registry  # noqa: E402
from demos.vision import OURS  # noqa: E402
from tests.app_server import AppServer  # noqa: E402
from tests.test_hostile import flac_claiming_hours, many_channel_flac, odd_rate_wav, raw_call  # noqa: E402

TARGET_RSS_MB = 3 * 1024
PROMPTS = ["ROMEO:\n", "JULIET:\nO Romeo", "First Citizen:\n", "KING RICHARD III:\nNow is the winter"]
SENTENCES = [
    "A man in a blue shirt is playing a guitar on the street.",
    "Two children are running along the beach with their dog.",
    "A woman is reading a book in the park while it rains.",
    "Zwei Hunde spielen im Schnee.",
]
# endpoint -> share of requests: roughly what a visitor clicks
MIX = {
    "/generate": 0.2,
    "/next_token": 0.1,
    "/translate": 0.15,
    "/classify_image": 0.15,
    "/classify_audio": 0.15,
    "/attention_map": 0.15,
    "/attention_lab": 0.1,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def fresh_image(folder: Path, rng: random.Random):
    """A new random picture per request, as every visitor uploads their own photo. (Identical
    outputs at the same moment can meet a Gradio file-cache race; see the report in README.)"""
    from PIL import Image

    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 255, (rng.randint(32, 96), 64, 3), np.uint8)
    path = folder / f"image-{rng.randrange(10**12)}.png"
    Image.fromarray(pixels).save(path)
    return path


def fresh_clip(folder: Path, rng: random.Random):
    """A new 0.5-0.9 s tone burst per request, at one of the common sample rates."""
    import soundfile as sf

    rate = rng.choice([8000, 16000, 22050, 44100])
    t = np.arange(int(rng.uniform(0.5, 0.9) * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 400) * t) * np.hanning(t.size)
    path = folder / f"clip-{rng.randrange(10**12)}.wav"
    sf.write(path, voice.astype(np.float32), rate)
    return path


def request_args(endpoint: str, rng: random.Random, folder: Path, handle_file) -> tuple:
    """Arguments of one realistic request to `endpoint`."""
    if endpoint == "/generate":
        return (rng.choice(PROMPTS), 200, 0.8, 65, 1.0, rng.randrange(1000), True)
    if endpoint == "/next_token":
        return (rng.choice(PROMPTS), 1.0, 65, 1.0)
    if endpoint == "/translate":
        text = rng.choice(SENTENCES)
        source = "German" if text.startswith("Zwei") else "English"
        target = rng.choice(["German", "French"]) if source == "English" else "English"
        return (text, source, target, 4, "average", "average")
    if endpoint == "/classify_image":
        return (handle_file(str(fresh_image(folder, rng))), "average", "average", OURS)
    if endpoint == "/classify_audio":
        return (handle_file(str(fresh_clip(folder, rng))), "rollout (all layers)", "mean of heads")
    if endpoint == "/attention_map":
        model = rng.choice(registry.MODELS)  # every model the app has, each of its attention kinds
        kind = rng.choice(model.attention_kinds)
        text = f"{model.example} {rng.choice(['hark', 'sir', 'my lord', 'good night'])}"
        if model.input == registry.TEXT_TO_LANGUAGE:
            text = rng.choice(SENTENCES[:3])
        image = handle_file(str(fresh_image(folder, rng))) if model.input == registry.IMAGE else None
        audio = handle_file(str(fresh_clip(folder, rng))) if model.input == registry.AUDIO else None
        return (model.task, kind, "average", "average", text, "de", image, audio)
    if endpoint == "/attention_lab":
        return ("the cat sat on the mat", rng.choice(["generation", "translation", "random"]), "causal", True, 1)
    raise ValueError(endpoint)


def address(i: int) -> dict[str, str]:
    """Client i's own address (the app trusts X-Forwarded-For when PLAYGROUND_TRUST_FORWARDED=1)."""
    return {"X-Forwarded-For": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"}


def run_client(url: str, n_requests: int, seed: int, folder: Path, results: list, errors: list) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, headers=address(seed))
    rng = random.Random(seed)
    endpoints, weights = zip(*MIX.items(), strict=True)
    for _ in range(n_requests):
        endpoint = rng.choices(endpoints, weights)[0]
        args = request_args(endpoint, rng, folder, handle_file)
        start = time.perf_counter()
        first = None
        try:
            job = client.submit(*args, api_name=endpoint)
            if endpoint == "/generate":
                for _ in job:  # streamed: note when the first characters arrive
                    first = first or time.perf_counter()
            job.result(timeout=300)
        except Exception as error:  # noqa: BLE001 - counted and reported, the run goes on
            errors.append(f"{endpoint}: {type(error).__name__}: {str(error)[:200]}")
            continue
        end = time.perf_counter()
        results.append((endpoint, 1000 * (end - start), 1000 * (first - start) if first else None))


class MemorySampler:
    """The server's resident memory (VmRSS) every `every_s` seconds, on a thread."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.samples.append((time.perf_counter() - self._start, self.now_mb()))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def series(self, step_s: float = 10.0) -> list[tuple[int, int]]:
        """(second, MiB) about every `step_s` seconds, for the report."""
        out, next_t = [], 0.0
        for t, mb in self.samples:
            if t >= next_t:
                out.append((round(t), round(mb)))
                next_t = t + step_s
        return out


def warm_up(url: str, folder: Path) -> None:
    """One request to every endpoint (models load, caches fill) before the start memory is read."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, headers=address(999_999))
    rng = random.Random(12345)
    for endpoint in MIX:
        client.submit(*request_args(endpoint, rng, folder, handle_file), api_name=endpoint).result(timeout=300)


def hostile_phase(url: str, folder: Path) -> dict[str, dict]:
    """One of each attack; how long each took and what came back (shortened)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, headers=address(888_888))
    rows = {}

    def timed(name: str, call) -> None:
        start = time.perf_counter()
        try:
            answer = str(call())
        except Exception as error:  # noqa: BLE001 - a refusal is an answer
            answer = f"{type(error).__name__}: {error}"
        rows[name] = {"seconds": round(time.perf_counter() - start, 2), "answer": answer[:120]}

    for name, make, filename in (
        ("odd-rate WAV (44101 Hz)", odd_rate_wav, "odd.wav"),
        ("8-channel 192 kHz FLAC, 60 s", many_channel_flac, "many.flac"),
        ("FLAC whose header claims 2.4M hours", flac_claiming_hours, "hours.flac"),
    ):
        path = folder / filename
        make(path)
        timed(
            name,
            lambda path=path: client.predict(
                handle_file(str(path)), "rollout (all layers)", "mean of heads", api_name="/classify_audio"
            )[2],
        )
    body = json.dumps({"data": ["a" * (16 << 20), 5, 0.8, 65, 1.0, 0, True]}).encode()
    timed(
        "16 MB prompt",
        lambda: (
            httpx.post(
                f"{url}gradio_api/call/generate",
                content=body,
                headers={"content-type": "application/json"},
                timeout=120,
            ).text
        ),
    )
    timed(
        "3000-character text",
        lambda: raw_call(url, "translate", ["word " * 600, "English", "German", 1, "average", "average"]),
    )
    timed(
        "a path on the server",
        lambda: raw_call(url, "classify_image", [{"path": "/etc/passwd"}, "average", "average", OURS]),
    )
    timed("top-k 10**400", lambda: raw_call(url, "generate", ["ROMEO:", 5, 0.8, 10**400, 1.0, 0, True]))
    return rows


def flood_phase(url: str, n_flood: int, visits: int = 5) -> dict:
    """One client posts `n_flood` slow generations at once and never reads them; meanwhile
    another visitor translates `visits` sentences one after another."""
    from gradio_client import Client

    job = json.dumps({"data": ["ROMEO:", 300, 0.8, 65, 1.0, 0, False]}).encode()  # no KV cache: slow
    codes: list[int] = []

    def flood() -> None:  # all at once, as a script would
        async def burst():
            headers = {**address(777_777), "content-type": "application/json"}
            async with httpx.AsyncClient(headers=headers, timeout=60) as http:
                posts = (http.post(f"{url}gradio_api/call/generate", content=job) for _ in range(n_flood))
                codes.extend(r.status_code for r in await asyncio.gather(*posts))

        asyncio.run(burst())

    visitor = Client(url, verbose=False, headers=address(666_666))
    thread = threading.Thread(target=flood)
    start = time.perf_counter()
    thread.start()
    waits = []
    for i in range(visits):
        t0 = time.perf_counter()
        visitor.predict(SENTENCES[i % 3], "English", "German", 4, "average", "average", api_name="/translate")
        waits.append(time.perf_counter() - t0)
    thread.join()
    return {
        "flood_requests": n_flood,
        "flood_posted_in_s": round(time.perf_counter() - start, 1),
        "flood_accepted": codes.count(200),
        "flood_refused": len(codes) - codes.count(200),
        "visitor_wait_s": [round(w, 2) for w in waits],
        "visitor_wait_max_s": round(max(waits), 2),
    }


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running app; default: start `python app.py` here")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=50, help="per client")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the app it starts")
    p.add_argument("--flood", type=int, default=70, help="requests in the flood phase (0: skip it)")
    p.add_argument("--no-hostile", action="store_true", help="skip the hostile phase")
    p.add_argument("--idle-s", type=float, default=20.0, help="idle time before the memory after the run is read")
    p.add_argument("--json", type=Path, help="also write the summary (with the memory series) here")
    args = p.parse_args()

    server = sampler = None
    env = {"PLAYGROUND_TRUST_FORWARDED": "1", **dict(item.split("=", 1) for item in args.env)}
    if args.url is None:
        server = AppServer(env).start()
        url = server.url
        print(f"started app.py in {server.startup_s:.1f} s at {url} with {env}", flush=True)
    else:
        url = args.url
    folder = Path(tempfile.mkdtemp(prefix="playground-load-"))
    try:
        warm_up(url, folder)
        if server:
            sampler = MemorySampler(server.process.pid)
            start_mb = sampler.now_mb()
            print(f"after warm-up: {start_mb:.0f} MiB", flush=True)
        results: list = []
        errors: list = []
        threads = [
            threading.Thread(target=run_client, args=(url, args.requests, args.seed + i, folder, results, errors))
            for i in range(args.clients)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        print(f"mixed phase: {len(results)} requests in {wall:.0f} s", flush=True)
        hostile = {} if args.no_hostile else hostile_phase(url, folder)
        flood = flood_phase(url, args.flood) if args.flood else {}
        if sampler:
            time.sleep(args.idle_s)  # queued work drains; the app hands freed memory back every 10 s
            end_mb = sampler.now_mb()
            sampler.stop()
        peak_rss = server.peak_rss_mb() if server else None
    finally:
        if server:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    by_endpoint = defaultdict(list)
    first_tokens = []
    for endpoint, ms, first_ms in results:
        by_endpoint[endpoint].append(ms)
        if first_ms is not None:
            first_tokens.append(first_ms)
    rows = {
        e: {
            "n": len(v),
            "p50_ms": round(percentile(v, 50)),
            "p95_ms": round(percentile(v, 95)),
            "max_ms": round(max(v)),
        }
        for e, v in sorted(by_endpoint.items())
    }
    print(f"\n{args.clients} clients x {args.requests} requests, {os.cpu_count()} CPUs, load before: {os.getloadavg()}")
    print(f"{'endpoint':<16} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for e, r in rows.items():
        print(f"{e:<16} {r['n']:>5} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8}")
    if first_tokens:
        p50, p95 = percentile(first_tokens, 50), percentile(first_tokens, 95)
        print(f"/generate first characters: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    total = len(results) + len(errors)
    print(f"requests {total}, errors {len(errors)}, wall {wall:.1f} s, {len(results) / wall:.1f} requests/s")
    for name, row in hostile.items():
        print(f"hostile: {name:<40} {row['seconds']:>6.2f} s  {row['answer'][:70]!r}")
    if flood:
        print(
            f"flood: {flood['flood_requests']} posted by one client ({flood['flood_accepted']} queued, "
            f"{flood['flood_refused']} refused); another visitor's waits {flood['visitor_wait_s']} s"
        )
    if peak_rss is not None:
        print(
            f"server memory: {start_mb:.0f} MiB after warm-up, peak {peak_rss:.0f} MiB (target <= {TARGET_RSS_MB}), "
            f"{end_mb:.0f} MiB after the run and {args.idle_s:.0f} s idle ({end_mb - start_mb:+.0f} MiB)"
        )
        print("memory over time (s, MiB):", sampler.series())
    for message in errors[:10]:
        print("error:", message)
    summary = {
        "bench": "load",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "settings": env,
        "requests": total,
        "errors": len(errors),
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(results) / wall, 2),
        "endpoints": rows,
        "worst_request_ms": max((r["max_ms"] for r in rows.values()), default=None),
        "generate_first_chars_p50_ms": round(percentile(first_tokens, 50)) if first_tokens else None,
        "generate_first_chars_p95_ms": round(percentile(first_tokens, 95)) if first_tokens else None,
        "hostile": hostile,
        "hostile_worst_s": max((r["seconds"] for r in hostile.values()), default=None),
        "flood": flood,
        "rss_after_warmup_mb": round(start_mb) if sampler else None,
        "peak_rss_mb": round(peak_rss) if peak_rss is not None else None,
        "rss_after_run_mb": round(end_mb) if sampler else None,
        "hardware": f"CPU, {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "date": date.today().isoformat(),
    }
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({**summary, "rss_series": sampler.samples if sampler else []}) + "\n")
    if errors:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
