"""How fast the host drives the device: the numbers that decide whether a small model's training
step is bound by Python and kernel launches rather than by arithmetic.

    python -m bench.host                 # this machine's CPU
    python -m bench.host --device cuda   # plus the cost of one kernel launch on the GPU

Prints one JSON line: the CPU model and core count, the seconds a fixed pure-Python loop takes
(compare two machines' host speed with it), and per device the microseconds one small op costs
when issued back to back (launch-bound: the CPU's cost to issue it) and when each is waited for
(issue plus the device's round trip). A training step of N kernels cannot be faster than about
N times the first figure, whatever the GPU."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def python_loop_s(n: int = 3_000_000) -> float:
    """Seconds for a fixed loop of additions in the interpreter (best of three)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best


def op_cost_us(device: str, ops: int = 2000) -> dict[str, float]:
    """Microseconds per small in-place add: issued back to back, then each one waited for."""
    import torch

    x = torch.zeros(256, device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(200):  # warm up the allocator and the launch path
        x.add_(1.0)
    sync()
    t0 = time.perf_counter()
    for _ in range(ops):
        x.add_(1.0)
    sync()
    issued = (time.perf_counter() - t0) / ops
    t0 = time.perf_counter()
    for _ in range(ops // 4):
        x.add_(1.0)
        sync()
    waited = (time.perf_counter() - t0) / (ops // 4)
    return {"issue_us": round(issued * 1e6, 2), "issue_and_wait_us": round(waited * 1e6, 2)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, or cuda to time kernel launches too")
    p.add_argument("--loop", type=int, default=3_000_000, help="iterations of the Python loop")
    args = p.parse_args(argv)
    import torch

    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "python_loop_s": round(python_loop_s(args.loop), 3),
        "python_loop_iterations": args.loop,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ops": {"cpu": op_cost_us("cpu")},
        "date": date.today().isoformat(),
    }
    if args.device != "cpu":
        report["device_name"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
        report["ops"][args.device] = op_cost_us(args.device)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
