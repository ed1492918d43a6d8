"""Does the rest of the app stay quick while someone trains in the Train tab?

    python -m bench.train_live [--seconds 40] [--probes 30] [--json bench/results/train_live_cpu.json]

Starts `python app.py`, times other endpoints (/next_token, /translate) through gradio_client with
nobody training, then again while one visitor streams a /train_live run (the reverse preset with a
GRU beside it), and checks that a second visitor asking to train meanwhile is told to wait. Prints
p50/p95 per endpoint for both phases, the run's steps and its updates, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from tests.app_server import AppServer  # noqa: E402

PROBES = {
    "/next_token": ("ROMEO:\nBut soft, what ligh", 1.0, 65, 1.0),
    "/translate": ("A man in a blue shirt is playing a guitar on the street.", "English", "German", 4, "1", "1"),
}


def train_args(seconds: float) -> tuple:
    """The knobs of /train_live, in order: reverse, 2 layers, 4 heads, width 64, a GRU with attention."""
    return ("reverse", "", 2, 4, 64, "sinusoidal", True, True, "pre-norm", 3e-3, 100, 0.0, 0.0, 1.0, "gru+attention", 0,
            seconds, "cross")  # fmt: skip


def probe(client, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in PROBES}
    for _ in range(rounds):
        for name, args in PROBES.items():
            start = time.perf_counter()
            client.predict(*args, api_name=name)
            times[name].append(1000 * (time.perf_counter() - start))
    return times


def stats(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"p50_ms": round(float(np.percentile(t, 50)), 1), "p95_ms": round(float(np.percentile(t, 95)), 1),
               "n": len(t)}
        for name, t in times.items()
    }  # fmt: skip


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=40.0, help="length of the training run (at most 60)")
    p.add_argument("--probes", type=int, default=30, help="rounds of probes with nobody training")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    from gradio_client import Client

    with AppServer() as server:
        prober, trainer, second = (Client(server.url, verbose=False) for _ in range(3))
        probe(prober, 3)  # load the models
        idle = probe(prober, args.probes)
        updates: list[float] = []
        outcome: dict = {}

        def train() -> None:
            start = time.perf_counter()
            job = trainer.submit(*train_args(args.seconds), api_name="/train_live")
            for update in job:
                updates.append(time.perf_counter() - start)
                outcome["status"] = update[0]
            outcome["wall_s"] = time.perf_counter() - start

        thread = threading.Thread(target=train)
        thread.start()
        while not updates:  # the run is streaming from here on
            time.sleep(0.1)
        try:
            second.predict(*train_args(5), api_name="/train_live")
            refusal = "not refused"
        except Exception as error:  # noqa: BLE001 - the message is the result
            refusal = str(error)
        busy: dict[str, list[float]] = {name: [] for name in PROBES}
        while thread.is_alive():
            for name, times in probe(prober, 1).items():
                busy[name] += times
        thread.join()
    status = outcome.get("status", "")
    steps = [int(row.split("|")[2]) for row in status.splitlines() if row.startswith("| steps |")]
    result = {
        "idle": stats(idle),
        "while_training": stats(busy),
        "run": {"seconds": args.seconds, "wall_s": round(outcome.get("wall_s", float("nan")), 1),
                "updates": len(updates), "transformer_steps": steps[0] if steps else None},
        "second_trainer": refusal,
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "date": date.today().isoformat(),
    }  # fmt: skip
    print(f"{'endpoint':<14} {'idle p50':>9} {'idle p95':>9} {'training p50':>13} {'training p95':>13}")
    for name in PROBES:
        i, b = result["idle"][name], result["while_training"][name]
        print(f"{name:<14} {i['p50_ms']:>9} {i['p95_ms']:>9} {b['p50_ms']:>13} {b['p95_ms']:>13}")
    print(f"run: {result['run']}; second trainer: {refusal[:120]}")
    return report(result, args.json)


if __name__ == "__main__":
    main()
