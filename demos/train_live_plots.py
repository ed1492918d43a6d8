"""The Train tab's figures: learning curves of every model, and a grid of attention maps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from demos.plots import plot_labels
from models.live_training import Point

COLOURS = ("#4056d6", "#d6406b")  # the transformer, the RNN


def learning_curves(histories: dict[str, list[Point]]) -> go.Figure:
    """Loss against steps and against each model's own training seconds; accuracy against steps."""
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("loss / step", "loss / seconds of training", "accuracy (greedy) / step"),
        horizontal_spacing=0.07,
    )
    for (name, points), colour in zip(histories.items(), COLOURS, strict=False):
        step = [p.step for p in points]
        seconds = [p.time_s for p in points]
        for col, x in ((1, step), (2, seconds)):
            first = col == 1
            fig.add_scatter(
                x=x,
                y=[p.train_loss for p in points],
                name=f"{name} train",
                row=1,
                col=col,
                line={"color": colour},
                legendgroup=f"{name} train",
                showlegend=first,
            )
            fig.add_scatter(
                x=x,
                y=[p.val_loss for p in points],
                name=f"{name} validation",
                row=1,
                col=col,
                line={"color": colour, "dash": "dash"},
                legendgroup=f"{name} val",
                showlegend=first,
            )
        fig.add_scatter(
            x=step,
            y=[p.val_accuracy for p in points],
            name=f"{name} validation acc.",
            row=1,
            col=3,
            line={"color": colour},
        )
        fig.add_scatter(x=step, y=[p.heldout_accuracy for p in points], name=f"{name} longer (held-out) acc.",
                        row=1, col=3, line={"color": colour, "dash": "dot"})  # fmt: skip
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_yaxes(range=[-0.02, 1.02], row=1, col=3)
    fig.update_layout(height=340, margin={"l": 40, "r": 10, "t": 40, "b": 30}, legend={"orientation": "h", "y": -0.15})
    return fig


def attention_grid(weights: np.ndarray, query_labels: list[str], key_labels: list[str], title: str) -> go.Figure:
    """weights (layers, heads, T_query, T_key) -> one small heatmap per layer (row) and head (column)."""
    layers, heads = weights.shape[:2]
    height = min(1000, 80 + 170 * layers)
    fig = make_subplots(
        rows=layers,
        cols=heads,
        subplot_titles=[f"layer {i + 1} head {j + 1}" for i in range(layers) for j in range(heads)],
        horizontal_spacing=0.02,
        vertical_spacing=42 / height,  # room for a row's key labels and the next row's titles
    )
    x, y = plot_labels(key_labels), plot_labels(query_labels)
    for i in range(layers):
        for j in range(heads):
            fig.add_heatmap(
                z=weights[i, j], x=x, y=y, zmin=0.0, zmax=1.0, colorscale="Blues", showscale=False, row=i + 1,
                col=j + 1, hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>",
            )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=0, tickfont={"size": 9})
    fig.update_yaxes(tickfont={"size": 9})
    for j in range(2, heads + 1):  # every head of a layer reads the same queries: labels on the first only
        fig.update_yaxes(showticklabels=False, col=j)
    fig.update_annotations(font_size=10)
    fig.update_layout(
        title={"text": title, "x": 0.0, "font": {"size": 13}},
        height=height,
        margin={"l": 40, "r": 10, "t": 60, "b": 20},
    )
    return fig
