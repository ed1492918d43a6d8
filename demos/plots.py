"""Plots shared by the tabs (plotly): one attention heatmap used everywhere."""

from __future__ import annotations

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
            x=unique_labels(key_labels),
            y=unique_labels(query_labels),
            colorscale="Blues",
            zmin=0.0,
            zmax=float(w.max()) if w.size else 1.0,
            hovertemplate=f"{query_axis} %{{y}}<br>{key_axis} %{{x}}<br>weight %{{z:.3f}}<extra></extra>",
        )
    )
    size = max(len(query_labels), len(key_labels))
    fig.update_layout(
        title=title,
        xaxis={"title": key_axis, "tickangle": -45, "side": "top"},
        yaxis={"title": query_axis, "autorange": "reversed"},
        height=height or min(900, 260 + 16 * size),
        margin={"l": 60, "r": 20, "t": 80, "b": 20},
    )
    return fig


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
