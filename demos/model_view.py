"""What the Attention Maps tab draws from all layers and heads at once: the model view (every
layer x head as a small map in one image; a click on a tile picks it) and the per-head summary
(entropy, most attended positions, previous/first/same-token heads)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from demos.plots import ATTENTION_COLORSCALE, colour_ceiling, overlay, resize, unique_labels
from models.analysis import attention_entropy

TAG_THRESHOLD = 0.4  # a head is tagged when at least this share of its weight goes to one place
TILE_PAD, LABEL_MARGIN = 4, 24  # model view layout in pixels


def tile_values(attention, weights: np.ndarray) -> np.ndarray:
    """The 2-D picture of one map: the full matrix for text, the CLS row on the patch grid
    (vision), the CLS row as a 1-row strip over time (audio)."""
    if not attention.from_cls:
        return weights
    row = weights[0, 1:]  # query CLS, keys without CLS itself
    if attention.patch_grid is not None:
        return row.reshape(attention.patch_grid)
    return row[None, :]


def _colorize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """values (r, c) -> (size_h, size_w, 3) uint8 on its own colour scale, nearest-neighbour."""
    from matplotlib import colormaps  # imported here: only drawing needs it

    rgb = colormaps[ATTENTION_COLORSCALE](np.clip(values / colour_ceiling(values), 0.0, 1.0))[..., :3]
    rows = np.arange(size[0]) * values.shape[0] // size[0]
    cols = np.arange(size[1]) * values.shape[1] // size[1]
    return (rgb[rows][:, cols] * 255).astype(np.uint8)


def _tile_size(attention) -> tuple[int, int]:
    """Pixels per small map: a model view stays around 900 px wide whatever the head count."""
    width = int(np.clip(880 // attention.heads, 64, 160))
    height = width if attention.spectrogram is None else max(16, width // 4)
    return height, width


def _tile_origin(layer: int, head: int, th: int, tw: int) -> tuple[int, int]:
    return LABEL_MARGIN + layer * (th + TILE_PAD), LABEL_MARGIN + head * (tw + TILE_PAD)


def model_view(attention, selected: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """All layers (rows) x heads (columns) as small maps in one RGB image; the selected tile is
    framed in red. `tile_at` maps a click on this image back to (layer, head)."""
    th, tw = _tile_size(attention)
    rows, cols = attention.layers, attention.heads
    canvas = np.full((LABEL_MARGIN + rows * (th + TILE_PAD), LABEL_MARGIN + cols * (tw + TILE_PAD), 3), 255, np.uint8)
    picture = None if attention.image is None else resize(attention.image, (th, tw))
    for layer in range(rows):
        for head in range(cols):
            values = tile_values(attention, attention.weights[layer, head])
            tile = _colorize(values, (th, tw)) if picture is None else overlay(picture, values)
            y, x = _tile_origin(layer, head, th, tw)
            canvas[y : y + th, x : x + tw] = tile
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    for head in range(cols):
        _, x = _tile_origin(0, head, th, tw)
        name = "rollout" if attention.kind == "rollout" else f"H{head + 1}"
        draw.text((x + 2, 3), name, fill=(60, 60, 60), font=font)
    for layer in range(rows):
        y, _ = _tile_origin(layer, 0, th, tw)
        draw.text((1, y + th // 2 - 7), f"L{layer + 1}", fill=(60, 60, 60), font=font)
    layer, head = selected
    if layer is not None and head is not None:
        y, x = _tile_origin(layer, head, th, tw)
        draw.rectangle([x - 2, y - 2, x + tw + 1, y + th + 1], outline=(220, 30, 30), width=2)
    return np.asarray(image)


def tile_at(attention, x: int, y: int) -> tuple[int, int] | None:
    """(layer, head) of the model-view tile under pixel (x, y), or None between tiles."""
    th, tw = _tile_size(attention)
    layer, dy = divmod(y - LABEL_MARGIN, th + TILE_PAD)
    head, dx = divmod(x - LABEL_MARGIN, tw + TILE_PAD)
    if y < LABEL_MARGIN or x < LABEL_MARGIN or dy >= th or dx >= tw:
        return None
    if layer >= attention.layers or head >= attention.heads:
        return None
    return int(layer), int(head)


def head_pattern(weights: np.ndarray, square: bool) -> dict[str, float]:
    """Average share of each query's weight on the previous token, the first token and itself.

    Query 0 is left out where it has no previous token; a causal query 0 can only see itself.
    """
    t_q, _ = weights.shape
    shares = {"first": float(weights[1:, 0].mean()) if t_q > 1 else float(weights[:, 0].mean())}
    if square and t_q > 1:
        idx = np.arange(1, t_q)
        shares["previous"] = float(weights[idx, idx - 1].mean())
        shares["same"] = float(weights[idx, idx].mean())
    return shares


def head_summary(attention, top: int = 3) -> list[dict]:
    """One row per layer and head: entropy, most attended positions, and a tag for heads that
    mostly look at the previous token, the first token or the same token.

    Text: averaged over queries. Vision and audio: the CLS query's row (what the maps show)."""
    square = attention.kind in ("causal self", "encoder self", "decoder self")  # position i against position j
    queries = attention.weights[:, :, :1] if attention.from_cls else attention.weights
    entropy = attention_entropy(torch.from_numpy(queries)).numpy()  # (layers, heads), mean over queries
    keys = unique_labels(attention.key_labels)
    names = {"previous": "previous token", "same": "same token"}
    names["first"] = "CLS itself" if attention.from_cls else "first token"
    rows = []
    for layer in range(attention.layers):
        for head in range(attention.heads):
            w = attention.weights[layer, head]
            if attention.from_cls:  # what CLS draws from the patches/frames; CLS itself is "first"
                received = np.concatenate([[0.0], w[0, 1:]]).astype(float)
                best = np.argsort(-received)[: min(top, len(received) - 1)]
                shares = {"first": float(w[0, 0])}
            else:
                received = w.mean(axis=0).astype(float)
                best = np.argsort(-received)[:top]
                shares = head_pattern(w, square)
            tags = [names[name] for name, share in shares.items() if share >= TAG_THRESHOLD]
            rows.append(
                {
                    "layer": layer + 1,
                    "head": "rollout" if attention.kind == "rollout" else head + 1,
                    "entropy (bits)": round(float(entropy[layer, head]), 3),
                    "most attended": ", ".join(f"{keys[i]} ({received[i]:.2f})" for i in best),
                    "previous": round(shares.get("previous", float("nan")), 3),
                    "first": round(shares["first"], 3),
                    "same": round(shares.get("same", float("nan")), 3),
                    "tag": ", ".join(tags),
                }
            )
    return rows
