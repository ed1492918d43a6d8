"""Load test: many people using the app at once, through gradio_client as the browser's API does.

    python -m bench.load [--clients 20] [--requests 50] [--url http://127.0.0.1:7860/]
                         [--env PLAYGROUND_CONCURRENCY=2 ...]

Without --url it starts `python app.py` itself (with the --env settings) and reads the server's
peak memory (VmHWM) at the end. Each client sends its requests one after another, a seeded mix of
every endpoint (streamed generation, translation, image and audio classification, attention
maps, the attention lab). Prints p50/p95 latency per endpoint, errors, throughput and peak RSS,
then one JSON line. Every request must succeed.
"""

from __future__ import annotations

import argparse
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from tests.app_server import AppServer  # noqa: E402

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
        return (handle_file(str(fresh_image(folder, rng))), "average", "average")
    if endpoint == "/classify_audio":
        return (handle_file(str(fresh_clip(folder, rng))), "rollout (all layers)", "mean of heads")
    if endpoint == "/attention_map":
        task, kind = rng.choice(
            [("generation", "causal self"), ("translation", "cross"), ("vision", "rollout"), ("audio", "CLS to frames")]
        )
        text = f"{rng.choice(PROMPTS)} {rng.choice(['hark', 'sir', 'my lord', 'good night'])}"
        if task == "translation":
            text = rng.choice(SENTENCES[:3])
        image = handle_file(str(fresh_image(folder, rng))) if task == "vision" else None
        audio = handle_file(str(fresh_clip(folder, rng))) if task == "audio" else None
        return (task, kind, "average", "average", text, "de", image, audio)
    if endpoint == "/attention_lab":
        return ("the cat sat on the mat", rng.choice(["generation", "translation", "random"]), "causal", True, 1)
    raise ValueError(endpoint)


def run_client(url: str, n_requests: int, seed: int, folder: Path, results: list, errors: list) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
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


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running app; default: start `python app.py` here")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=50, help="per client")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the app it starts")
    args = p.parse_args()

    server = None
    if args.url is None:
        env = dict(item.split("=", 1) for item in args.env)
        server = AppServer(env).start()
        url = server.url
        print(f"started app.py in {server.startup_s:.1f} s at {url} with {env or 'default settings'}", flush=True)
    else:
        url = args.url
    folder = Path(tempfile.mkdtemp(prefix="playground-load-"))
    try:
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
    if peak_rss is not None:
        print(f"server peak RSS (VmHWM) {peak_rss:.0f} MiB (target <= {TARGET_RSS_MB} MiB)")
    for message in errors[:10]:
        print("error:", message)
    summary = {
        "bench": "load",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "settings": dict(item.split("=", 1) for item in args.env),
        "requests": total,
        "errors": len(errors),
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(results) / wall, 2),
        "endpoints": rows,
        "generate_first_chars_p50_ms": round(percentile(first_tokens, 50)) if first_tokens else None,
        "generate_first_chars_p95_ms": round(percentile(first_tokens, 95)) if first_tokens else None,
        "peak_rss_mb": round(peak_rss) if peak_rss is not None else None,
        "hardware": f"CPU, {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "date": date.today().isoformat(),
    }
    print(json.dumps(summary))
    if errors:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
