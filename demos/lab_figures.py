"""The Attention Lab's pictures of each step: small matrices with their numbers written in, every
head's weights side by side, and the softmax-saturation table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from demos.plots import ATTENTION_COLORSCALE, every_tick, plot_labels

if TYPE_CHECKING:
    from demos.attention_lab import LabResult

SHOW_DIMS = 8  # columns shown of the wide matrices (d_model, d_k)


def _format(value: float) -> str:
    if math.isinf(value):
        return "-∞" if value < 0 else "∞"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def matrix_figure(
    values: Tensor | np.ndarray, rows: list[str], cols: list[str], title: str, probabilities: bool = False
) -> go.Figure:
    """A small matrix with its numbers written in the cells; -inf cells are grey and say -∞."""
    z = np.asarray(values, dtype=float)
    text = [[_format(v) for v in row] for row in z]
    finite = np.where(np.isfinite(z), z, np.nan)
    bound = float(np.nanmax(np.abs(finite))) if np.isfinite(finite).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=finite,
            x=plot_labels(cols),
            y=plot_labels(rows),
            text=text,
            texttemplate="%{text}",
            textfont={"size": 9},
            colorscale=ATTENTION_COLORSCALE if probabilities else "RdBu",
            zmin=0.0 if probabilities else -bound,
            zmax=1.0 if probabilities else bound,
            hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
            showscale=False,
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=120 + 22 * len(rows),
        margin={"l": 70, "r": 10, "t": 60, "b": 10},
        xaxis={"side": "top", "tickangle": -45, **every_tick(len(cols))},
        yaxis={"autorange": "reversed", **every_tick(len(rows))},
        plot_bgcolor="#d9d9d9",  # masked (-inf) cells show through as grey
    )
    return fig


def _dims(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(min(n, SHOW_DIMS))]


def step_figures(r: LabResult) -> dict[str, go.Figure]:
    """One small figure per step of the attention formula (docs/concepts.md), for head r.head."""
    h, labels = r.head, r.labels
    d, d_k = r.x.size(-1), r.q.size(-1)
    cut = f" (first {SHOW_DIMS} of {d} dims)" if d > SHOW_DIMS else ""
    cut_k = f" (first {SHOW_DIMS} of {d_k})" if d_k > SHOW_DIMS else ""
    figs = {
        "embeddings": matrix_figure(r.token_embeddings[:, :SHOW_DIMS], labels, _dims(d, "e"), "token embeddings" + cut),
        "x": matrix_figure(r.x_attention[:, :SHOW_DIMS], labels, _dims(d, "x"), _input_title(r) + cut),
    }
    if r.positional is not None:
        figs["positional"] = matrix_figure(r.positional[:, :SHOW_DIMS], labels, _dims(d, "p"), "+ positional" + cut)
    for name, m in (("q", r.q), ("k", r.k), ("v", r.v)):
        figs[name] = matrix_figure(
            m[h, :, :SHOW_DIMS], labels, _dims(d_k, name), f"{name.upper()}, head {h + 1}{cut_k}"
        )
    figs["scores"] = matrix_figure(r.scores[h], labels, labels, f"scores QKᵀ, head {h + 1}")
    figs["query"] = query_figure(r)
    scaled = "scaled by 1/√d_k = " + f"{r.scale:.3f}" if r.scaled else "NOT scaled (switch off)"
    figs["masked"] = matrix_figure(r.masked_scores[h], labels, labels, f"{scaled}, mask: {r.mask_kind}")
    figs["weights"] = matrix_figure(r.weights[h], labels, labels, "softmax (each row sums to 1)", probabilities=True)
    figs["head_output"] = matrix_figure(
        r.head_outputs[h, :, :SHOW_DIMS], labels, _dims(d_k, "o"), f"weights × V, head {h + 1}{cut_k}"
    )
    figs["heads"] = heads_figure(r)
    figs["concatenated"] = matrix_figure(
        r.concatenated[:, :SHOW_DIMS], labels, _dims(d, "c"), "Concat(head₁..head_h)" + cut
    )
    figs["output"] = matrix_figure(r.output[:, :SHOW_DIMS], labels, _dims(d, "y"), "× W_O = the layer's output" + cut)
    return figs


def _input_title(r: LabResult) -> str:
    if torch.equal(r.x, r.x_attention):
        return "X = embeddings + positions"
    return "LayerNorm(X): pre-norm attention reads this"


def heads_figure(r: LabResult) -> go.Figure:
    """All heads' weights side by side: the same tokens, different patterns."""
    n = r.weights.size(0)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"head {i + 1}" for i in range(n)], horizontal_spacing=0.02)
    for i in range(n):
        fig.add_trace(
            go.Heatmap(
                z=r.weights[i].numpy(),
                x=r.labels,
                y=r.labels,
                colorscale=ATTENTION_COLORSCALE,
                zmin=0,
                zmax=1,
                showscale=False,
                hovertemplate="%{y} → %{x}: %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=i == 0, row=1, col=i + 1)
        fig.update_xaxes(showticklabels=False, row=1, col=i + 1)
    fig.update_layout(title="the split into heads: every head's softmax weights", height=300, margin={"t": 70})
    return fig


def query_figure(r: LabResult) -> go.Figure:
    """One query of head r.head up close (what bertviz calls the neuron view): its vector q_i, each
    key's element-wise product q_i ∘ k_j, whose row sum is the score q_i · k_j, and the weight the
    softmax gives that key once the score is scaled and masked."""
    h, i, labels = r.head, r.query, r.labels
    q = r.q[h, i].numpy()
    products = (r.k[h] * r.q[h, i]).numpy()  # (T, d_k)
    scores = products.sum(axis=1)  # = r.scores[h, i]
    weights = r.weights[h, i].numpy()
    allowed = np.ones(len(labels), dtype=bool) if r.mask is None else r.mask[i].numpy()
    dims = [f"d{n}" for n in range(q.size)]
    keys = plot_labels(labels)
    bound = float(np.abs(products).max()) or 1.0
    fig = make_subplots(
        rows=2,
        cols=2,
        column_widths=[0.78, 0.22],
        row_heights=[0.1, 0.9],
        horizontal_spacing=0.03,
        vertical_spacing=0.09,
        subplot_titles=["", "", "q ∘ k for each key: a row sums to the score q · k", "softmax weight (scaled score)"],
    )
    fig.add_trace(
        go.Heatmap(
            z=q[None, :],
            x=dims,
            y=["q"],
            colorscale="RdBu",
            zmid=0,
            showscale=False,
            hovertemplate="q[%{x}] = %{z:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    hover = [
        f"score {s:.2f} × {r.scale:.3f} = {s * r.scale:.2f}" if ok else f"score {s:.2f}, masked: −∞"
        for s, ok in zip(scores, allowed, strict=True)
    ]
    fig.add_trace(
        go.Heatmap(
            z=products,
            x=dims,
            y=keys,
            colorscale="RdBu",
            zmin=-bound,
            zmax=bound,
            showscale=False,
            customdata=np.array(hover)[:, None].repeat(q.size, axis=1),
            hovertemplate="key %{y}, %{x}: q·k term %{z:.3f}<br>%{customdata}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=weights,
            y=keys,
            orientation="h",
            marker_color=["#3b6fb6" if ok else "#bbbbbb" for ok in allowed],
            text=[
                f"{w:.2f} ({sc * r.scale:.1f})" if ok else "masked: −∞"
                for w, sc, ok in zip(weights, scores, allowed, strict=True)
            ],
            textposition=["auto" if ok else "outside" for ok in allowed],
            cliponaxis=False,
            customdata=hover,
            hovertemplate="key %{y}: weight %{x:.3f}<br>%{customdata}<extra></extra>",
        ),
        row=2,
        col=2,
    )
    fig.update_yaxes(autorange="reversed", **every_tick(len(labels)), row=2, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=2, col=2)
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_yaxes(ticktext=[f"q of {labels[i]}"], tickvals=["q"], row=1, col=1)
    fig.update_xaxes(range=[0, 1], row=2, col=2)
    fig.update_xaxes(visible=False, row=1, col=2)
    fig.update_yaxes(visible=False, row=1, col=2)
    fig.update_layout(
        title={"text": f"query “{labels[i]}”, head {h + 1}: which dimensions make each score", "font": {"size": 13}},
        height=160 + 24 * len(labels),
        margin={"l": 70, "r": 10, "t": 80, "b": 10},
        showlegend=False,
    )
    return fig


def saturation_table(r: LabResult) -> list[list]:
    """Per head: entropy and mean largest weight, with and without 1/sqrt(d_k)."""
    return [
        [
            i + 1,
            round(float(r.entropy["scaled"][i]), 3),
            round(float(r.max_weight["scaled"][i]), 3),
            round(float(r.entropy["unscaled"][i]), 3),
            round(float(r.max_weight["unscaled"][i]), 3),
        ]
        for i in range(r.weights.size(0))
    ]


SATURATION_HEADERS = ["head", "entropy scaled (bits)", "max weight scaled", "entropy unscaled", "max weight unscaled"]


def lab_summary(r: LabResult, layer: str) -> str:
    """What the tab writes above the steps: the layer (`layer` describes it), sizes, saturation, the check."""
    t, d = r.x.shape
    h, d_k = r.q.shape[0], r.q.shape[-1]
    lines = [
        f"**{layer}**: {t} tokens, d_model = {d}, {h} heads of d_k = {d_k}.",
        f"Head {r.head + 1}: entropy {float(r.entropy['scaled'][r.head]):.2f} bits with scaling, "
        f"{float(r.entropy['unscaled'][r.head]):.2f} bits without (largest weight per row on average "
        f"{float(r.max_weight['scaled'][r.head]):.2f} vs {float(r.max_weight['unscaled'][r.head]):.2f}): "
        "without 1/√d_k the scores are √d_k times larger and the softmax saturates towards one key.",
    ]
    if r.scaled:
        lines.append(
            f"Check: `MultiHeadAttention.forward` on the same X gives the same output "
            f"(largest difference {r.reference_difference:.1e})."
        )
    return "\n\n".join(lines + r.notes)


# the step panels in the order the tab lays them out
STEP_ORDER = (
    "embeddings",
    "positional",
    "x",
    "q",
    "k",
    "v",
    "scores",
    "masked",
    "query",
    "weights",
    "head_output",
    "heads",
    "concatenated",
    "output",
)


def empty_figure(title: str) -> go.Figure:
    """A blank panel with a title that says why it is blank."""
    fig = go.Figure()
    fig.update_layout(title=title, height=160, xaxis={"visible": False}, yaxis={"visible": False})
    return fig
