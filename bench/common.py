"""What the benches share: timing a call, percentiles, the table, the hardware line, the JSON report."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def latencies_ms(fn: Callable[[], object], repeats: int, warmup: int = 10) -> np.ndarray:
    """Wall time of `repeats` calls of fn, in ms, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return np.asarray(times)


def latency_stats(cases: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{case: {"p50_ms", "p95_ms", "mean_ms"}} for timings from `latencies_ms`."""
    return {
        name: {
            "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p95_ms": round(float(np.percentile(t, 95)), 2),
            "mean_ms": round(float(np.mean(t)), 2),
        }
        for name, t in cases.items()
    }


def print_latency_table(title: str, stats: dict[str, dict[str, float]]) -> None:
    print(title)
    print(f"  {'':<45} {'p50 ms':>8} {'p95 ms':>8}")
    for name, s in stats.items():
        print(f"  {name:<45} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f}")


def hardware(threads: int) -> str:
    """A line for the results table; the load average says how busy the machine was."""
    load = os.getloadavg()[0]
    return f"CPU ({platform.processor() or platform.machine()}, {threads} threads, load {load:.1f})"


def tab_latency(
    task: str,
    model,
    inputs,
    end_to_end: tuple[str, Callable[[], object]],
    target_p95_ms: float,
    threads: int,
    repeats: int,
    title: str,
    **extra,
) -> dict:
    """The classification tabs' bench: the model's forward with and without attention maps, and
    the tab's whole function (`end_to_end`: its name and a call). Prints the table and one JSON
    line, and returns that JSON."""
    import json
    from datetime import date

    import torch

    def forward(need_weights: bool) -> Callable[[], object]:
        def call():
            with torch.inference_mode():
                return model(inputs, need_weights=need_weights)

        return call

    name, call = end_to_end
    stats = latency_stats(
        {
            "forward, no attention maps": latencies_ms(forward(False), repeats),
            "forward + attention maps": latencies_ms(forward(True), repeats),
            name: latencies_ms(call, repeats),
        }
    )
    p95 = stats[name]["p95_ms"]
    result = {
        "bench": task,
        "threads": threads,
        "repeats": repeats,
        **extra,
        "latency": stats,
        "p95_ms_end_to_end": p95,
        "target": {"p95_ms_end_to_end": f"<= {target_p95_ms:g}"},
        "meets_target": p95 <= target_p95_ms,
        "params": sum(p.numel() for p in model.parameters()),
        "hardware": hardware(threads),
        "date": date.today().isoformat(),
    }
    print_latency_table(title, stats)
    print(json.dumps(result))
    return result


def report(result: dict, json_path: str | Path | None = None) -> dict:
    """Print a bench's result as one JSON line (the last line of its output) and, with `--json`,
    also keep it in that file (bench/results/ holds the runs the README cites)."""
    print(json.dumps(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    return result
