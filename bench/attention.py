"""Time and peak memory of one attention forward pass against sequence length (notes: "O(n^2)").

Four ways to attend, all from the same q, k, v of shape (batch, heads, n, head_dim):
- explicit: models.attention.scaled_dot_product_attention, softmax(QK^T / sqrt(d_k)) V written
  out; it materialises the n x n weights, so time and memory grow as n^2;
- fused: torch's F.scaled_dot_product_attention (flash / memory-efficient kernels where the
  device has them), same result without keeping the n x n matrix on GPU;
- window: models.attention.local_attention, causal sliding window of `--window` keys: O(n * w);
- linear: models.attention.linear_attention (kernelized, an approximation): O(n).

Peak memory is real, not a formula:
- cuda: torch.cuda.max_memory_allocated during one call, minus what was allocated before it;
- cpu: the peak resident set size (VmHWM) added by one call, in a fresh process per point
  (after q, k, v exist and a tiny warm-up call has paged in the code, the kernel's high-water
  mark is reset through /proc/self/clear_refs), so it counts the call's intermediates and output,
  not the inputs, and no allocator cache from an earlier point carries over. Resolution: ~1 MiB.

    python -m bench.attention                       # 64..4096, table on stdout
    python -m bench.attention --device cuda --dtype bfloat16 --json bench/results/attention_h200.json  # name: the card
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from models.attention import linear_attention, local_attention, scaled_dot_product_attention

KINDS = ("explicit", "fused", "window", "linear")
DEFAULT_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLOCKS = ("wall", "cpu")


@dataclass
class Point:
    kind: str
    n: int
    time_ms: float  # median of `repeats` timed calls after warm-up
    peak_mib: float | None  # extra memory at the peak of one call (see the module docstring)


def attend(kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """One forward pass of attention `kind` (see KINDS)."""
    if kind == "explicit":
        return scaled_dot_product_attention(q, k, v)[0]
    if kind == "fused":
        return F.scaled_dot_product_attention(q, k, v)
    if kind == "window":
        return local_attention(q, k, v, window)
    if kind == "linear":
        return linear_attention(q, k, v)
    raise ValueError(f"unknown attention kind {kind!r}; choose from {KINDS}")


def make_qkv(n: int, batch: int, heads: int, dim: int, device: str, dtype: torch.dtype = torch.float32):
    g = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(batch, heads, n, dim, generator=g, device=device, dtype=dtype) for _ in range(3)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_attention(
    kind: str, n: int, batch=1, heads=8, dim=64, window=128, repeats=5, device="cpu", dtype=None, clock="wall"
):
    """Median time in ms of one call (after one warm-up call).

    clock "wall" is elapsed time; "cpu" is this process's CPU time, which on a CPU shared with other
    jobs still measures the work (with one thread it equals the wall time of a quiet machine).
    """
    if clock not in CLOCKS or (clock == "cpu" and device != "cpu"):
        raise ValueError(f"clock must be one of {CLOCKS} ('cpu' only on the CPU)")
    timer = time.perf_counter if clock == "wall" else time.process_time
    q, k, v = make_qkv(n, batch, heads, dim, device, dtype or torch.float32)
    attend(kind, q, k, v, window)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = timer()
        attend(kind, q, k, v, window)
        _sync(device)
        times.append((timer() - start) * 1e3)
    return statistics.median(times)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


@torch.inference_mode()
def peak_memory_mib(kind: str, n: int, batch=1, heads=8, dim=64, window=128, device="cpu", dtype=None) -> float:
    """Extra memory (MiB) at the peak of one call. On CPU call this in a fresh process (measure_cpu_point)."""
    q, k, v = make_qkv(n, batch, heads, dim, device, dtype or torch.float32)
    if device.startswith("cuda"):
        attend(kind, q, k, v, window)  # load kernels first; their workspaces are not the algorithm's
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = attend(kind, q, k, v, window)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    # a tiny call first pages in the library code this kind runs (it would count as RSS otherwise);
    # tiny also in window, so it leaves no freed buffer of the measured call's size to reuse
    attend(kind, *make_qkv(8, batch, heads, dim, device, dtype or torch.float32), min(window, 4))
    before = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    out = attend(kind, q, k, v, window)
    del out
    return (_rss_kib("VmHWM") - before) / 1024


def measure_cpu_point(kind: str, n: int, batch: int, heads: int, dim: int, window: int, dtype=None) -> float:
    """peak_memory_mib in a child process, so no earlier call's freed memory hides this one's."""
    dtype_name = str(dtype or torch.float32).removeprefix("torch.")
    point = {"kind": kind, "n": n, "batch": batch, "heads": heads, "dim": dim, "window": window, "dtype": dtype_name}
    args = json.dumps(point)
    root = Path(__file__).resolve().parent.parent
    # a fixed mmap threshold: glibc would otherwise raise it as buffers are freed and then keep
    # freed memory for reuse, so later allocations of the same call would not show in the RSS
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.attention", "--memory-point", args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def run(sizes, kinds, batch, heads, dim, window, repeats, device, dtype=None, memory=True, clock="wall") -> list[Point]:
    points = []
    for n in sizes:
        for kind in kinds:
            t = time_attention(kind, n, batch, heads, dim, window, repeats, device, dtype, clock)
            if not memory:
                peak = None
            elif device == "cpu":
                peak = measure_cpu_point(kind, n, batch, heads, dim, window, dtype)
            else:
                peak = peak_memory_mib(kind, n, batch, heads, dim, window, device, dtype)
            points.append(Point(kind, n, round(t, 3), None if peak is None else round(peak, 2)))
            print(
                f"  n={n:5d} {kind:8s} {t:10.2f} ms  {peak if peak is not None else float('nan'):9.1f} MiB",
                file=sys.stderr,
            )
    return points


def table(points: list[Point]) -> str:
    """Two blocks, time (ms) and peak memory (MiB), one row per sequence length."""
    kinds = list(dict.fromkeys(p.kind for p in points))
    sizes = sorted({p.n for p in points})
    by = {(p.kind, p.n): p for p in points}
    lines = []
    for title, attr, fmt in (
        ("time per call (ms)", "time_ms", "{:>10.2f}"),
        ("peak memory (MiB)", "peak_mib", "{:>10.1f}"),
    ):
        lines.append(f"{title}\n{'n':>6}" + "".join(f"{k:>10}" for k in kinds))
        for n in sizes:
            cells = []
            for k in kinds:
                value = getattr(by[(k, n)], attr) if (k, n) in by else None
                cells.append(f"{'-':>10}" if value is None else fmt.format(value))
            lines.append(f"{n:>6}" + "".join(cells))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="sequence lengths")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64, help="head dimension d_k")
    parser.add_argument("--window", type=int, default=128, help="keys per query for sliding-window attention")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per point (median is reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--clock", default="wall", choices=CLOCKS, help="wall time, or process CPU time (CPU only)")
    parser.add_argument("--no-memory", action="store_true", help="time only")
    parser.add_argument("--json", type=Path, help="also write the points and settings here")
    parser.add_argument("--memory-point", help=argparse.SUPPRESS)  # internal: one CPU memory point
    args = parser.parse_args(argv)

    if args.memory_point:
        p = json.loads(args.memory_point)
        dtype = getattr(torch, p["dtype"])
        print(peak_memory_mib(p["kind"], p["n"], p["batch"], p["heads"], p["dim"], p["window"], dtype=dtype))
        return

    dtype = getattr(torch, args.dtype)
    threads = torch.get_num_threads()
    print(
        f"attention forward, batch {args.batch}, {args.heads} heads, d_k {args.dim}, window {args.window}, "
        f"{args.dtype}, device {args.device}, {threads} threads, {args.clock} clock",
        file=sys.stderr,
    )
    points = run(
        args.sizes,
        args.kinds,
        args.batch,
        args.heads,
        args.dim,
        args.window,
        args.repeats,
        args.device,
        dtype,
        memory=not args.no_memory,
        clock=args.clock,
    )
    print(table(points))
    if args.json:
        device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "memory_point", "no_memory")}
        report = {
            "device": args.device,
            "device_name": device_name,
            "threads": threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "clock": args.clock,
            "load_average": list(os.getloadavg()),  # other jobs on the machine while it ran
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "memory_method": "cuda max_memory_allocated delta"
            if args.device.startswith("cuda")
            else "peak RSS (VmHWM) delta of one call in a fresh process",
            "settings": settings,
            # the size of one n x n weights tensor, for comparison with the measured peaks
            "scores_mib": {str(n): args.batch * args.heads * n * n * dtype.itemsize / 2**20 for n in args.sizes},
            "points": [asdict(p) for p in points],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
