"""Plots shared by the tabs (plotly): one attention heatmap used everywhere."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go


def attention_heatmap(
    weights,
    query_labels: list[str],
    key_labels: list[str],
    title: str = "",
    query_axis: str = "query",
    key_axis: str = "key",
    height: int | None = None,
) -> go.Figure:
    """weights (T_query, T_key) -> heatmap with token labels and exact values on hover.

    Labels are made unique (plotly merges equal category labels) by numbering repeats.
    """
    w = np.asarray(weights, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=w,
            x=plot_labels(key_labels),
            y=plot_labels(query_labels),
            colorscale="Blues",
            zmin=0.0,
            zmax=float(w.max()) if w.size else 1.0,
            hovertemplate=f"{query_axis} %{{y}}<br>{key_axis} %{{x}}<br>weight %{{z:.3f}}<extra></extra>",
        )
    )
    # the key labels stand on top, slanted; the title goes above them, in a top margin sized for
    # both, so the cells keep their room (~24 px a row) however long the labels are
    label_room = min(120, 10 + 6 * max((len(k) for k in key_labels), default=1))
    top = 60 + label_room
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "top", "pad": {"t": 10, "l": 8}},
        xaxis={"title": {"text": key_axis, "standoff": 2}, "tickangle": -45, "side": "top", "automargin": False},
        yaxis={"title": {"text": query_axis, "standoff": 2}, "autorange": "reversed", "automargin": False},
        height=height or min(900, top + 40 + 24 * len(query_labels)),
        margin={"l": 30 + min(150, 7 * max((len(q) for q in query_labels), default=1)), "r": 20, "t": top, "b": 20},
    )
    return fig


def plot_labels(labels: list[str]) -> list[str]:
    """unique_labels, escaped for plotly, which reads labels as HTML: '</s>' would vanish as a tag."""
    return [html.escape(label, quote=False) for label in unique_labels(labels)]


def unique_labels(labels: list[str]) -> list[str]:
    """Number repeated labels ('the', 'the²') so every row and column keeps its own category."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        label = label if label.strip() else repr(label)
        n = seen.get(label, 0)
        seen[label] = n + 1
        out.append(label if n == 0 else f"{label} ({n + 1})")
    return out
