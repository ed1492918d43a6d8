"""Beside the Attention Lab's steps: the sinusoidal positional encoding, the paper's warmup
schedule, and the efficiency view (time and memory of attention against sequence length).

The efficiency view reads the stored runs of `python -m bench.attention` (bench/results/*.json)
as data: the app does not import bench/. Its live measurement times the same four functions of
models.attention on this CPU.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

from demos.common import ROOT, UserError, listen, shows_errors
from models.attention import linear_attention, local_attention, scaled_dot_product_attention
from models.positional import sinusoidal_table
from models.schedules import noam_lr

RESULTS_DIR = ROOT / "bench" / "results"
KINDS = ("explicit", "fused", "window", "linear")  # as bench/attention.py names them
WINDOW = 128


def load_results(folder: Path = RESULTS_DIR) -> list[dict]:
    """Every stored run (attention_<name>.json) with its name; unreadable files are skipped."""
    results = []
    for path in sorted(Path(folder).glob("attention_*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data["name"] = path.stem.removeprefix("attention_")
        results.append(data)
    return results


def describe(report: dict) -> str:
    """One line naming a stored run: which device, how many threads, which clock, and the number
    type when it is not float32 (a GPU run in bfloat16 moves half the bytes)."""
    threads = report.get("threads")
    parts = [report.get("device_name") or report.get("device", "?")]
    if report.get("device") == "cpu":
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}, {report.get('clock', 'wall')} time")
    dtype = (report.get("settings") or {}).get("dtype", "float32")
    if dtype != "float32":
        parts.append(dtype)
    return f"{report.get('name', '?')}: " + ", ".join(parts)


def _attend(kind: str, q, k, v):
    if kind == "explicit":
        return scaled_dot_product_attention(q, k, v)[0]
    if kind == "fused":
        return F.scaled_dot_product_attention(q, k, v)
    if kind == "window":
        return local_attention(q, k, v, WINDOW)
    return linear_attention(q, k, v)


@torch.inference_mode()
def time_attention(kind: str, n: int, repeats: int = 3, heads: int = 8, dim: int = 64) -> float:
    """Median milliseconds of one call on (1, heads, n, dim) inputs, after a warm-up call."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, dim, generator=g) for _ in range(3))
    _attend(kind, q, k, v)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _attend(kind, q, k, v)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def positional_figures(max_len: int = 64, d_model: int = 128) -> tuple[go.Figure, go.Figure]:
    """The sinusoidal table (position x dimension) and PE PE^T (position x position)."""
    table = sinusoidal_table(int(max_len), int(d_model)).double()
    pe = go.Figure(
        go.Heatmap(
            z=table.numpy(),
            colorscale="RdBu",
            zmid=0,
            hovertemplate="position %{y}, dim %{x}: %{z:.3f}<extra></extra>",
        )
    )
    pe.update_layout(
        title="sinusoidal PE: low dims turn fast, high dims slowly",
        xaxis_title="dimension",
        yaxis={"title": "position", "autorange": "reversed"},
        height=420,
    )
    similarity = (table @ table.T).numpy()
    sim = go.Figure(
        go.Heatmap(z=similarity, colorscale="Viridis", hovertemplate="PE(%{y}) · PE(%{x}) = %{z:.2f}<extra></extra>")
    )
    sim.update_layout(
        title="PE PEᵀ: similarity depends on the distance only",
        xaxis_title="position",
        yaxis={"title": "position", "autorange": "reversed"},
        height=420,
    )
    return pe, sim


def schedule_figure(d_model: int = 512, warmup: int = 4000, steps: int = 20000) -> go.Figure:
    """The paper's LR = d_model^-0.5 min(step^-0.5, step warmup^-1.5)."""
    d_model, warmup, steps = int(d_model), int(warmup), int(steps)
    if min(d_model, warmup, steps) < 1:
        raise ValueError("d_model, warmup and steps must be positive.")
    x = np.unique(np.linspace(1, steps, 400).astype(int))
    y = [noam_lr(int(s), d_model, warmup) for s in x]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", hovertemplate="step %{x}: lr %{y:.2e}<extra></extra>"))
    fig.add_vline(
        x=warmup, line_dash="dot", annotation_text=f"warmup ends, peak {noam_lr(warmup, d_model, warmup):.2e}"
    )
    fig.update_layout(
        title=f"warmup schedule, d_model {d_model}, warmup {warmup}",
        xaxis_title="step",
        yaxis_title="learning rate",
        height=360,
    )
    return fig


LIVE_SIZES = (64, 128, 256, 512, 1024)


def measure_live(sizes=LIVE_SIZES, repeats: int = 3) -> list[dict]:
    """Time each kind of attention on this CPU now (bench/attention.py's settings, time only)."""
    return [
        {"kind": kind, "n": n, "time_ms": time_attention(kind, n, repeats=repeats), "peak_mib": None}
        for n in sizes
        for kind in KINDS
    ]


COLORS = {"explicit": "#d62728", "fused": "#1f77b4", "window": "#2ca02c", "linear": "#9467bd"}


def efficiency_figure(live: list[dict] | None = None, stored: list[dict] | None = None) -> go.Figure:
    """Time and peak memory against sequence length, log-log: the live CPU run (solid) and the
    stored bench results (dashed, one style per file), with n and n^2 guides."""
    stored = load_results() if stored is None else stored
    fig = make_subplots(rows=1, cols=2, subplot_titles=["time per forward (ms)", "peak extra memory (MiB)"])
    dashes = ["dash", "dot", "dashdot", "longdash"]
    series = [("live CPU, now", live or [], "solid")]
    series += [(describe(r), r["points"], dashes[i % 4]) for i, r in enumerate(stored)]
    for name, points, dash in series:
        for kind in KINDS:
            pts = sorted((p for p in points if p["kind"] == kind), key=lambda p: p["n"])
            for col, key in ((1, "time_ms"), (2, "peak_mib")):
                xy = [(p["n"], p[key]) for p in pts if p.get(key)]
                if not xy:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[a for a, _ in xy],
                        y=[b for _, b in xy],
                        mode="lines+markers",
                        line={"color": COLORS[kind], "dash": dash},
                        name=f"{kind}, {name}",
                        legendgroup=f"{kind}{name}",
                        showlegend=col == 1 or key == "peak_mib" and not any(p.get("time_ms") for p in pts),
                        hovertemplate=f"{kind}, {name}<br>n = %{{x}}<br>%{{y:.3g}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
    _add_guides(fig, [p for _, points, _ in series for p in points])
    fig.update_xaxes(type="log", title_text="sequence length n")
    fig.update_yaxes(type="log")
    fig.update_layout(height=460, legend={"font": {"size": 10}}, margin={"t": 60})
    return fig


def _add_guides(fig: go.Figure, points: list[dict]) -> None:
    """Grey lines through the first explicit point with slopes 1 and 2: O(n) and O(n^2)."""
    for col, key in ((1, "time_ms"), (2, "peak_mib")):
        anchors = sorted((p["n"], p[key]) for p in points if p["kind"] == "explicit" and p.get(key))
        if not anchors:
            continue
        n0, y0 = anchors[len(anchors) // 2]
        xs = np.array([64, 4096])
        for power, label in ((1, "∝ n"), (2, "∝ n²")):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=y0 * (xs / n0) ** power,
                    mode="lines",
                    line={"color": "#aaaaaa", "width": 1, "dash": "dot"},
                    name=label,
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
            fig.add_annotation(
                x=math.log10(4096),
                y=math.log10(y0 * (4096 / n0) ** power),
                text=label,
                showarrow=False,
                xanchor="left",
                row=1,
                col=col,
            )


STORED_HEADERS = ["run", "n"] + [f"{k} ms" for k in KINDS] + [f"{k} MiB" for k in KINDS]


def stored_table() -> list[list]:
    """One row per stored run and sequence length: time and memory of each kind (STORED_HEADERS)."""
    rows = []
    for r in load_results():
        by = {(p["kind"], p["n"]): p for p in r["points"]}
        for n in sorted({p["n"] for p in r["points"]}):
            cells = [by.get((k, n), {}) for k in KINDS]
            rows.append([describe(r), n] + [c.get("time_ms") for c in cells] + [c.get("peak_mib") for c in cells])
    return rows


def schedule(d_model, warmup, steps) -> go.Figure:
    """The schedule figure for the numbers typed in, or a UserError that says what they must be."""
    try:
        return schedule_figure(d_model, warmup, steps)
    except (TypeError, ValueError):
        raise UserError("d_model, warmup and steps must be positive whole numbers.") from None


def build() -> None:
    """The Attention Lab's three accordions: positional encoding, warmup schedule, efficiency."""
    with gr.Accordion("Positional encoding", open=False):
        with gr.Row():
            max_len = gr.Slider(8, 256, value=64, step=1, label="positions")
            d_model = gr.Slider(8, 512, value=128, step=2, label="d_model")
        with gr.Row():
            pe_plot, sim_plot = (gr.Plot(value=f, show_label=False) for f in positional_figures())
        for control in (max_len, d_model):
            listen(control.change, positional_figures, [max_len, d_model], [pe_plot, sim_plot])

    with gr.Accordion("Warmup learning-rate schedule", open=False):
        with gr.Row():
            sched_d = gr.Number(512, label="d_model", precision=0, minimum=1)
            sched_w = gr.Number(4000, label="warmup steps", precision=0, minimum=1)
            sched_n = gr.Number(20000, label="steps shown", precision=0, minimum=1)
        sched_plot = gr.Plot(value=schedule_figure(), show_label=False)
        for control in (sched_d, sched_w, sched_n):
            listen(control.change, shows_errors(schedule), [sched_d, sched_w, sched_n], sched_plot)

    with gr.Accordion("Efficiency: attention is O(n²)", open=False):
        gr.Markdown(
            "Time and extra memory of one attention forward pass (batch 1, 8 heads, d_k 64) against sequence "
            "length: explicit softmax(QKᵀ)V keeps the n×n matrix, the fused kernel does not, a sliding window "
            "(128 keys) and linear attention grow as n. Dashed: stored runs of `python -m bench.attention` "
            "(bench/results/); solid: this CPU, now (time only, n ≤ 1024)."
        )
        measure = gr.Button("Measure on this CPU now (a few seconds)")
        figure = gr.Plot(value=efficiency_figure(), show_label=False)
        gr.Dataframe(value=stored_table() or None, headers=STORED_HEADERS, label="stored results")
        listen(measure.click, lambda: efficiency_figure(measure_live()), None, figure)
