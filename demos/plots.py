"""Plots shared by the tabs: one attention heatmap (plotly) and one overlay of a map on a picture,
with one colour convention for attention weights everywhere:

- a matrix of weights (token x token) is drawn in ATTENTION_COLORSCALE from 0 to `colour_ceiling`
  (the 99th percentile), in every tab that shows one;
- weights over a picture or over time (CLS to patches, CLS to frames) are drawn in OVERLAY_COLORMAP
  from 0 to their largest value.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from PIL import Image

ATTENTION_COLORSCALE = "Blues"
OVERLAY_COLORMAP = "inferno"  # matplotlib's name; plotly calls it "Inferno"


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

    Labels are made unique (plotly merges equal category labels) by numbering repeats; every one
    is written (plotly would skip every other label of a long axis), smaller when there are many.
    """
    w = np.asarray(weights, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=w,
            x=plot_labels(key_labels),
            y=plot_labels(query_labels),
            colorscale=ATTENTION_COLORSCALE,
            zmin=0.0,
            zmax=colour_ceiling(w),
            hovertemplate=f"{query_axis} %{{y}}<br>{key_axis} %{{x}}<br>weight %{{z:.3f}}<extra></extra>",
        )
    )
    if title:
        title = f"{title}<br><sub>colours saturate at the 99th percentile; hover for exact weights</sub>"
    # the key labels stand on top, slanted (upright past 40); the title goes above them, in a top
    # margin sized for both, so the cells keep their room (~24 px a row) however long the labels are
    label_room = min(120, 14 + 7 * max((len(k) for k in key_labels), default=1))
    top = 86 + label_room  # the title and its note (~64 px from the top), the axis title, the labels
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "top", "pad": {"t": 24, "l": 8}},
        xaxis={
            "title": {"text": key_axis, "standoff": 2},
            "tickangle": -45 if len(key_labels) <= 40 else -90,  # upright labels need less room side by side
            "side": "top",
            "automargin": False,
            **every_tick(len(key_labels)),
        },
        yaxis={
            "title": {"text": query_axis, "standoff": 2},
            "autorange": "reversed",
            "automargin": False,
            **every_tick(len(query_labels)),
        },
        height=height or min(900, top + 40 + 24 * len(query_labels)),
        margin={"l": 30 + min(150, 7 * max((len(q) for q in query_labels), default=1)), "r": 20, "t": top, "b": 20},
    )
    return fig


def every_tick(count: int) -> dict:
    """Axis settings that write every category's label, in a font that shrinks as they crowd."""
    return {"dtick": 1, "tickfont": {"size": 11 if count <= 40 else 9 if count <= 80 else 7}}


def colour_ceiling(values) -> float:
    """The weight drawn in the darkest colour: the 99th percentile, so that one saturated cell (a
    causal map's first row is always 1.0) does not wash out the rest. Hover shows exact values."""
    values = np.asarray(values, dtype=float)
    top = float(np.percentile(values, 99)) if values.size else 1.0
    return top if top > 0 else max(float(values.max(initial=0.0)), 1e-9)


def overlay(picture: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a (rows, cols) map, scaled to its own maximum and coloured with OVERLAY_COLORMAP,
    over an RGB picture (H, W, 3) uint8. Each cell stays one flat block: the model has one value
    per patch, no finer."""
    from matplotlib import colormaps  # imported here: only drawing needs it

    heat = np.asarray(heat, dtype=float)
    height, width = picture.shape[:2]
    scaled = heat / heat.max() if heat.size and heat.max() > 0 else heat
    rows = np.arange(height) * heat.shape[0] // height  # pixel -> its cell
    cols = np.arange(width) * heat.shape[1] // width
    colour = colormaps[OVERLAY_COLORMAP](scaled[rows][:, cols])[..., :3] * 255
    return ((1 - alpha) * picture.astype(np.float32) + alpha * colour).astype(np.uint8)


def resize(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB array resized to (height, width), bilinear."""
    return np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.BILINEAR))


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


def char_label(c: str) -> str:
    """Visible names for characters a heatmap axis would swallow."""
    return {" ": "␣", "\n": "⏎", "\t": "⇥"}.get(c, c)
