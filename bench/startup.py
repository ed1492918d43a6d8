"""Start-up time: from `python app.py` to its page answering HTTP 200, as a visitor waits for it.

    python -m bench.startup [--runs 3] [--env KEY=VALUE ...]

Starts the app `--runs` times one after another on a free port and prints each time, the median
(target <= 10 s on 2 cores) and one JSON line. Models the layout does not need load after the
page is up (app.py), so this is the time until the app can be used. Beside the wall time it
reports the CPU time the app process used until then (user + system): on a machine shared with
other work the wall time grows with the load, the CPU time much less. And the page's size, as
sent with and without gzip (it holds the tabs' worked examples).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import urllib.request
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from tests.app_server import AppServer  # noqa: E402

TARGET_S = 10.0


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the app it starts")
    args = p.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    times, cpu = [], []
    for run in range(args.runs):
        with AppServer(env) as server:
            times.append(server.startup_s)
            cpu.append(cpu_seconds(server.process.pid))
            page = page_bytes(server.url)
        load = os.getloadavg()[0]
        print(f"run {run + 1}: ready in {times[-1]:.2f} s, CPU {cpu[-1]:.2f} s (load average {load:.2f})", flush=True)
    median, cpu_median = statistics.median(times), statistics.median(cpu)
    print(f"median {median:.2f} s over {args.runs} runs (target <= {TARGET_S:.0f} s), CPU {cpu_median:.2f} s")
    print(f"the page: {page['gzip']:,} bytes sent gzip'd, {page['plain']:,} uncompressed")
    summary = {
        "bench": "startup",
        "median_s": round(median, 2),
        "runs_s": [round(t, 2) for t in times],
        "cpu_median_s": round(cpu_median, 2),
        "load_average": round(os.getloadavg()[0], 2),
        "target_s": TARGET_S,
        "page_bytes": page,
        "settings": env,
        "hardware": f"CPU, {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "date": date.today().isoformat(),
    }
    print(json.dumps(summary))
    return summary


def page_bytes(url: str) -> dict:
    """The page's size as sent to a browser that accepts gzip and to one that does not (the
    scripts and styles it loads after are Gradio's, compressed by Gradio, the same for any app)."""
    sizes = {}
    for name, accept in (("gzip", "gzip, deflate, br"), ("plain", "identity")):
        request = urllib.request.Request(url, headers={"Accept-Encoding": accept})
        with urllib.request.urlopen(request, timeout=60) as response:
            sizes[name] = len(response.read())
    return sizes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


if __name__ == "__main__":
    main()
