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
