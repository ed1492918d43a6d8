"""How the Forward Pass tab draws one step of a `models.introspect.ForwardTrace`: the list of
steps, the block diagram with the current box lit, the small matrices and one figure per step.

Pure rendering: demos/forward_pass.py computes the walkthrough, this module only shows it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from models.blocks import ACTIVATION_NAMES, ACTIVATIONS
from models.introspect import AttentionTrace, FeedForwardTrace, ForwardTrace

SHOW_DIMS = 8  # columns of the small matrices
BAR_DIMS = 24  # dimensions in the vector bar charts
TOP_N = 10  # bars in the probability charts


@dataclass(frozen=True)
class Step:
    """One stop of the walkthrough: `key` names the box, `layer`/`sub` say which (0-based)."""

    key: str  # embed | norm | qkv | attention | add | ffn | final_norm | logits | temperature | cut | sample
    title: str
    layer: int | None = None
    sub: int | None = None  # index into ForwardTrace.layers[layer]


def walkthrough_steps(trace: ForwardTrace) -> list[Step]:
    """Every step in the order the model computes it (pre-norm: LayerNorm, sub-layer, add;
    post-norm: sub-layer, then add & LayerNorm)."""
    steps = [Step("embed", "Token and position in")]
    for i, layer in enumerate(trace.layers):
        for j, sub in enumerate(layer):
            where = f"Layer {i + 1}: "
            if sub.norm_first:
                steps.append(Step("norm", where + f"LayerNorm before the {sub.kind}", i, j))
            if isinstance(sub, AttentionTrace):
                steps.append(
                    Step(
                        "qkv",
                        where
                        + ("Q from the decoder, K, V from the encoder" if sub.kind.startswith("cross") else "Q, K, V"),
                        i,
                        j,
                    )
                )
                steps.append(Step("attention", where + sub.kind, i, j))
            else:
                steps.append(Step("ffn", where + "feed-forward", i, j))
            steps.append(Step("add", where + ("residual add" if sub.norm_first else "residual add & LayerNorm"), i, j))
    steps += [
        Step("final_norm", "Final LayerNorm"),
        Step("logits", "Logits: the output head"),
        Step("temperature", "Temperature"),
        Step("cut", "Top-k / top-p cut"),
        Step("sample", "The sampled token"),
    ]
    return steps


# ----------------------------------------------------------------------------------------------
# The block diagram
# ----------------------------------------------------------------------------------------------

COLOURS = {"norm": "#e8eaf0", "qkv": "#fde7c8", "attention": "#fbd3a0", "ffn": "#cfe3f7", "add": "#ffffff"}


def _boxes(trace: ForwardTrace) -> list[tuple[tuple, str, str]]:
    """(id, label, colour key) of each box, top to bottom; ids match `_box_id`."""
    boxes = [(("embed",), "token embedding + position", "norm")]
    for j, sub in enumerate(trace.layers[0]):
        if sub.norm_first:
            boxes.append((("norm", j), "LayerNorm", "norm"))
        if isinstance(sub, AttentionTrace):
            cross = sub.kind.startswith("cross")
            boxes.append((("qkv", j), "Q, K, V" + (" (K, V: encoder)" if cross else ""), "qkv"))
            boxes.append((("attention", j), "cross-attention" if cross else "masked self-attention", "attention"))
        else:
            boxes.append((("ffn", j), "feed-forward (" + ACTIVATION_NAMES[sub.activation] + ")", "ffn"))
        boxes.append((("add", j), "+ residual" + ("" if sub.norm_first else " & LayerNorm"), "add"))
    boxes += [
        (("final_norm",), "final LayerNorm", "norm"),
        (("logits",), "logits (output head)", "norm"),
        (("temperature",), "÷ temperature, softmax", "norm"),
        (("cut",), "top-k / top-p cut", "norm"),
        (("sample",), "sample the next token", "norm"),
    ]
    return boxes


def _box_id(step: Step) -> tuple:
    return (step.key,) if step.sub is None else (step.key, step.sub)


def diagram_html(trace: ForwardTrace, steps: list[Step], index: int) -> str:
    """An SVG of the block (drawn once, 'x N layers') with the current step's box lit."""
    step = steps[index]
    boxes = _boxes(trace)
    row, width, box_w, left = 30, 330, 230, 60
    mid = left + box_w / 2
    block = [k for k, (box, _, _) in enumerate(boxes) if len(box) == 2]
    top, gap = 30, 24  # room above and below the block's frame for its label

    def _y(k: int) -> int:
        return top + row * k + gap * (k >= block[0]) + gap * (k > block[-1])

    height = _y(len(boxes) - 1) + row + 10
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img">']
    y0, y1 = _y(block[0]) - 8, _y(block[-1]) + row + 2
    where = f"layer {step.layer + 1} of {trace.n_layers}" if step.layer is not None else f"× {trace.n_layers} layers"
    parts.append(
        f'<rect x="{left - 34}" y="{y0}" width="{box_w + 62}" height="{y1 - y0}" rx="8" fill="none" '
        f'stroke="#8a8fa3" stroke-dasharray="5 4"/>'
        f'<text x="{left - 28}" y="{y0 - 6}" font-size="12" fill="#4a4f63">decoder block, {where}</text>'
    )
    # the residual stream: a line down the left edge of the block, into every "+"
    parts.append(f'<line x1="{left - 16}" y1="{y0}" x2="{left - 16}" y2="{y1}" stroke="#b33" stroke-width="2"/>')
    current = _box_id(step)
    for k, (box, label, colour) in enumerate(boxes):
        y = _y(k)
        lit = box == current
        stroke, sw, weight = ("#d62728", 3, "bold") if lit else ("#7a7f93", 1, "normal")
        if colour == "add":
            parts.append(
                f'<line x1="{left - 16}" y1="{y + 11}" x2="{left}" y2="{y + 11}" stroke="#b33" stroke-width="2"/>'
            )
        parts.append(
            f'<rect x="{left}" y="{y}" width="{box_w}" height="{row - 8}" rx="5" fill="{COLOURS[colour]}" '
            f'stroke="{stroke}" stroke-width="{sw}"/>'
            f'<text x="{left + box_w / 2}" y="{y + 16}" font-size="12.5" text-anchor="middle" '
            f'font-weight="{weight}" fill="#1f2330">{html.escape(label)}</text>'
        )
        if k < len(boxes) - 1:
            parts.append(f'<line x1="{mid}" y1="{y + row - 8}" x2="{mid}" y2="{_y(k + 1)}" stroke="#7a7f93"/>')
        if lit:
            parts.append(f'<text x="{left + box_w + 6}" y="{y + 16}" font-size="14" fill="#d62728">◀</text>')
    parts.append("</svg>")
    caption = f"<div style='font-size:0.9em'>Step <b>{index + 1}</b> of {len(steps)}: {html.escape(step.title)}</div>"
    return f"<div class='forward-diagram'>{caption}{''.join(parts)}</div>"


# ----------------------------------------------------------------------------------------------
# Small matrices and figures
# ----------------------------------------------------------------------------------------------


def fmt(value: float) -> str:
    if math.isinf(value):
        return "−∞" if value < 0 else "∞"
    return f"{value:.3f}"


def vector_table(rows: list[tuple[str, Tensor]], n: int = SHOW_DIMS) -> str:
    """A markdown table: one row per named vector, its first n entries (and '…' if longer)."""
    width = max(len(v) for _, v in rows)
    shown = min(n, width)
    more = " … |" if width > shown else ""
    head = "| | " + " | ".join(f"d{i}" for i in range(shown)) + " |" + (" … |" if more else "")
    rule = "|---" * (shown + 1 + bool(more)) + "|"
    body = ["| " + name + " | " + " | ".join(fmt(float(x)) for x in v[:shown]) + " |" + more for name, v in rows]
    return "\n".join([head, rule, *body])


def norm(v: Tensor) -> float:
    return float(v.norm())


def vectors_figure(named: list[tuple[str, Tensor]], title: str, n: int = BAR_DIMS) -> go.Figure:
    fig = go.Figure()
    for name, v in named:
        values = v[:n].tolist()
        fig.add_bar(x=[f"d{i}" for i in range(len(values))], y=values, name=name)
    fig.update_layout(title=title, barmode="group", height=330, margin={"l": 40, "r": 10, "t": 50, "b": 40})
    return fig


def heads_figure(weights: Tensor, keys: list[str], query: str, title: str) -> go.Figure:
    """One query's attention weights, (heads, keys), as a heatmap with the key labels."""
    z = weights.numpy()
    x = [f"{i}:{html.escape(k)}" for i, k in enumerate(keys)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=x,
            y=[f"head {h + 1}" for h in range(z.shape[0])],
            colorscale="Blues",
            zmin=0,
            hovertemplate="%{y}, key %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{title}: what position {html.escape(query)} attends to",
        xaxis={"tickangle": -60, "type": "category"},
        yaxis={"autorange": "reversed"},
        height=260 + 14 * z.shape[0],
        margin={"l": 60, "r": 10, "t": 50, "b": 70},
    )
    return fig


def activation_figure(ff: FeedForwardTrace, p: int) -> go.Figure:
    """Every hidden unit of position p as a point on the activation's curve."""
    hidden, active = ff.hidden[p], ff.activated[p]
    lo, hi = float(hidden.min()) - 0.5, float(hidden.max()) + 0.5
    grid = torch.linspace(lo, hi, 200)
    curve = ACTIVATIONS[ff.activation]()(grid)  # the model's own activation, whichever it uses
    fig = go.Figure()
    name = ACTIVATION_NAMES[ff.activation]
    fig.add_scatter(x=grid.tolist(), y=curve.tolist(), mode="lines", name=name, line={"color": "#888"})
    fig.add_scatter(
        x=hidden.tolist(),
        y=active.tolist(),
        mode="markers",
        name=f"{hidden.numel()} hidden units",
        marker={"size": 5, "color": "#1f77b4", "opacity": 0.6},
        hovertemplate="unit %{text}: in %{x:.3f} → out %{y:.3f}<extra></extra>",
        text=list(range(hidden.numel())),
    )
    fig.update_layout(
        title=f"The {ACTIVATION_NAMES[ff.activation]} of every hidden unit (x: W₁x + b₁, y: after the activation)",
        xaxis_title="pre-activation",
        yaxis_title="activation",
        height=340,
        margin={"l": 50, "r": 10, "t": 50, "b": 40},
    )
    return fig


SERIES_COLOURS = ("#c6dbef", "#6baed6", "#1f77b4")  # earlier series lighter, the last the darkest; none red


def probability_figure(
    series: list[tuple[str, Tensor]],
    label,
    title: str,
    highlight: int | None = None,
    ylabel: str = "probability",
    order: list[int] | None = None,
) -> go.Figure:
    """Grouped bars over `order` (default: the TOP_N tokens of the last series), best first, in
    shades of blue; the `highlight` token is marked "drawn" in red above its bars."""
    if order is None:
        order = series[-1][1].topk(min(TOP_N, series[-1][1].numel())).indices.tolist()
    names = [f"{label(i)}" for i in order]
    fig = go.Figure()
    for k, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[max(0, len(SERIES_COLOURS) - len(series) + k)]
        fig.add_bar(
            x=names,
            y=[float(values[i]) for i in order],
            name=name,
            marker_color=colour,
            hovertemplate="%{x}: %{y:.4f}<extra>" + html.escape(name) + "</extra>",
        )
    fig.update_layout(
        title=title,
        barmode="group",
        xaxis={"type": "category"},
        yaxis_title=ylabel,
        height=330,
        margin={"l": 50, "r": 10, "t": 50, "b": 40},
    )
    if highlight is not None and highlight in order:
        tallest = max(float(values[highlight]) for _, values in series)
        fig.add_annotation(
            x=names[order.index(highlight)], y=tallest, text="drawn", showarrow=True, arrowhead=2,
            arrowcolor="#d62728", font={"color": "#d62728"}, ay=-22,
        )  # fmt: skip
        top = max(float(values[i]) for _, values in series for i in order)
        fig.update_yaxes(range=[0, top * 1.25])  # room for the mark above the tallest bar
    return fig


def stream_figure(trace: ForwardTrace, p: int, query: str) -> go.Figure:
    """How much each sub-layer writes into the residual stream at position p (L2 norms), and the
    stream's own norm after each layer."""
    fig = go.Figure()
    layers = [f"layer {i + 1}" for i in range(trace.n_layers)]
    for j, sub in enumerate(trace.layers[0]):
        fig.add_bar(x=layers, y=[norm(layer[j].output[p]) for layer in trace.layers], name=f"‖{sub.kind} output‖")
    fig.add_scatter(
        x=["embedding", *layers],
        y=[norm(trace.embedded[p])] + [norm(layer[-1].after[p]) for layer in trace.layers],
        name="‖residual stream‖ after it",
        mode="lines+markers",
    )
    fig.update_layout(
        title=f"What each sub-layer adds to the residual stream at position {html.escape(query)}",
        barmode="group",
        # the bars name the layers first: without an order the embedding would stand after the last layer
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": ["embedding", *layers]},
        yaxis_title="L2 norm",
        height=330,
        margin={"l": 50, "r": 10, "t": 50, "b": 40},
    )
    return fig


LENS_TOP = 5


def lens_rows(trace: ForwardTrace, p: int, label, target: int | None) -> list[list]:
    """The logit lens at position p: per read-out point, the top predictions (and the rank and
    probability of the token that really comes next, when known)."""
    rows = []
    names = ["embedding"] + [f"after layer {i + 1}" for i in range(trace.n_layers)]
    for name, logits in zip(names, trace.lens_logits[:, p], strict=True):
        probs = logits.softmax(-1)
        top = probs.topk(min(LENS_TOP, probs.numel()))
        row = [name] + [f"{label(int(i))} {float(q):.0%}" for q, i in zip(top.values, top.indices, strict=True)]
        if target is not None:
            rank = int((probs > probs[target]).sum()) + 1
            row.append(f"#{rank}, {float(probs[target]):.1%}")
        rows.append(row)
    return rows


def lens_headers(has_target: bool) -> list[str]:
    return ["read after"] + [f"top {i + 1}" for i in range(LENS_TOP)] + (["the real next token"] if has_target else [])


def top_pairs(weights: np.ndarray, keys: list[str], n: int = 3) -> str:
    order = np.argsort(-weights)[:n]
    return ", ".join(f"{i}:`{keys[i]}` {weights[i]:.2f}" for i in order)
