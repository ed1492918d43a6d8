"""Attention Maps tab: every layer and head of every model, for an input given in place.

Pick a model and which of its attentions to look at (translation: encoder self, decoder self,
cross; generation: causal self; vision: CLS to patches, rollout; audio: CLS to frames, rollout).
`attention_map` is the plain function behind the `/attention_map` endpoint: it returns the
enlarged map of one layer/head (or their average), the model view (all layers x heads as small
maps in one image; click a tile to enlarge it) and a per-head summary table.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image, ImageDraw, ImageFont

from demos import attention_inputs
from demos.common import CORES, MissingCheckpoint, checkpoint_dir, has_checkpoint, missing_message
from demos.plots import attention_heatmap, unique_labels
from models.analysis import attention_entropy, attention_rollout

TITLE = "Attention Maps"

# task -> the attentions it has, first one is the default
KINDS: dict[str, tuple[str, ...]] = {
    "generation": ("causal self",),
    "translation": ("encoder self", "decoder self", "cross"),
    "vision": ("CLS to patches", "rollout"),
    "audio": ("CLS to frames", "rollout"),
}
AVERAGE = "average"
TAG_THRESHOLD = 0.4  # a head is tagged when at least this share of its weight goes to one place
TILE_PAD, LABEL_MARGIN = 4, 24  # model view layout in pixels


@dataclass
class AttentionSet:
    """All layers and heads of one attention kind for one input."""

    task: str
    kind: str
    weights: np.ndarray  # (layers, heads, T_query, T_key); rollout: (layers, 1, T, T)
    query_labels: list[str]
    key_labels: list[str]
    image: np.ndarray | None = None  # (H, W, 3) uint8 that the patches cover (vision)
    patch_grid: tuple[int, int] | None = None  # rows x cols of patches (vision)
    key_times: np.ndarray | None = None  # seconds of each frame token (audio)
    spectrogram: np.ndarray | None = None  # (n_mels, frames) in dB, shown under the audio map
    spectrogram_times: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know (cropped input...)

    @property
    def layers(self) -> int:
        return self.weights.shape[0]

    @property
    def heads(self) -> int:
        return self.weights.shape[1]

    @property
    def from_cls(self) -> bool:
        """Vision and audio show what the CLS token (query 0) draws from the patches/frames."""
        return self.task in ("vision", "audio")


@dataclass
class AttentionMap:
    """What `attention_map` returns: the enlarged map, the model view and the head summary."""

    figure: go.Figure
    model_view: np.ndarray  # (H, W, 3) uint8
    summary: list[dict]
    values: np.ndarray  # the enlarged map's numbers
    attention: AttentionSet


# ----------------------------------------------------------------------------------------------
# Running the models
# ----------------------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple, AttentionSet] = OrderedDict()
_CACHE_SIZE = 16


def _digest(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Image.Image):
        value = np.asarray(value)
    if isinstance(value, tuple):  # gradio audio: (sample_rate, samples)
        return f"{value[0]}:" + _digest(np.asarray(value[1]))
    if isinstance(value, np.ndarray):
        return hashlib.sha1(value.tobytes() + str(value.shape).encode()).hexdigest()
    return str(value)


def compute_attention(task: str, kind: str, text: str = "", image=None, audio=None, target: str = "de") -> AttentionSet:
    """Run `task`'s model on the input once and collect every layer's and head's weights of `kind`.

    Results are cached per input, so picking another layer or head only redraws.
    """
    if task not in KINDS:
        raise ValueError(f"Unknown model {task!r}; choose one of {', '.join(KINDS)}")
    if kind not in KINDS[task]:
        raise ValueError(f"The {task} model has no {kind!r} attention; it has {', '.join(KINDS[task])}")
    if not has_checkpoint(task):
        raise MissingCheckpoint(missing_message(task))
    key = (str(checkpoint_dir(task)), task, kind, text, target, _digest(image), _digest(audio))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    with torch.inference_mode():
        if task in ("generation", "translation"):
            result = _text_attention(task, kind, text, target)
        else:
            result = _cls_attention(task, kind, image if task == "vision" else audio)
    _CACHE[key] = result
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _stack(attentions: list[dict], name: str) -> np.ndarray:
    """[{name: (1, H, Tq, Tk)}, ...] -> (layers, H, Tq, Tk) float32."""
    return torch.cat([a[name] for a in attentions], dim=0).float().numpy()


def _text_attention(task: str, kind: str, text: str, target: str) -> AttentionSet:
    if task == "generation":
        run = attention_inputs.generation_attention(text)
        weights = _stack(run.attentions, "self")
        return AttentionSet(task, kind, weights, run.source_labels, run.source_labels, notes=run.notes)
    run = attention_inputs.translation_attention(text, target)
    encoder = [a for a in run.attentions if "encoder_self" in a]
    decoder = [a for a in run.attentions if "encoder_self" not in a]
    if kind == "encoder self":
        weights, q, k = _stack(encoder, "encoder_self"), run.source_labels, run.source_labels
    elif kind == "decoder self":
        weights, q, k = _stack(decoder, "self"), run.target_labels, run.target_labels
    else:
        weights, q, k = _stack(decoder, "cross"), run.target_labels, run.source_labels
    return AttentionSet(task, kind, weights, q, k, notes=run.notes)


def _cls_attention(task: str, kind: str, value) -> AttentionSet:
    run = attention_inputs.vision_attention(value) if task == "vision" else attention_inputs.audio_attention(value)
    weights = _stack(run.attentions, "self")
    if kind == "rollout":
        # rollout through layers 1..l for every l: one "head" per layer
        layers = [torch.from_numpy(weights[i : i + 1]) for i in range(len(weights))]
        weights = np.stack([attention_rollout(layers[: i + 1]).numpy() for i in range(len(layers))])
    return AttentionSet(
        task,
        kind,
        weights,
        run.source_labels,
        run.source_labels,
        image=run.image,
        patch_grid=run.patch_grid,
        key_times=run.key_times,
        spectrogram=run.spectrogram,
        spectrogram_times=run.spectrogram_times,
        notes=run.notes,
    )


# ----------------------------------------------------------------------------------------------
# Selecting and drawing maps
# ----------------------------------------------------------------------------------------------


def select(attention: AttentionSet, layer: int | None, head: int | None) -> np.ndarray:
    """(T_query, T_key) weights of one layer/head; None averages over layers or heads (0-based)."""
    w = attention.weights
    w = w.mean(axis=0) if layer is None else w[_check(layer, attention.layers, "layer")]
    return w.mean(axis=0) if head is None else w[_check(head, attention.heads, "head")]


def _check(index: int, count: int, what: str) -> int:
    if not 0 <= index < count:
        raise ValueError(f"{what.capitalize()} {index + 1} does not exist: this attention has {count} {what}s.")
    return index


def tile_values(attention: AttentionSet, weights: np.ndarray) -> np.ndarray:
    """The 2-D picture of one map: the full matrix for text, CLS row on the patch grid (vision),
    CLS row as a 1-row strip over time (audio)."""
    if not attention.from_cls:
        return weights
    row = weights[0, 1:]  # query CLS, keys without CLS itself
    if attention.patch_grid is not None:
        return row.reshape(attention.patch_grid)
    return row[None, :]


def colour_ceiling(values: np.ndarray) -> float:
    """The value drawn in the darkest colour: the 99th percentile, so that one saturated cell (a causal
    map's first row is always 1.0) does not wash out the rest. Hover still shows exact values."""
    top = float(np.percentile(values, 99)) if values.size else 1.0
    return top if top > 0 else max(float(values.max(initial=0.0)), 1e-9)


def _colorize(values: np.ndarray, size: tuple[int, int], cmap: str = "Blues") -> np.ndarray:
    """values (r, c) -> (size_h, size_w, 3) uint8 on its own colour scale, nearest-neighbour."""
    from matplotlib import colormaps  # imported here: only drawing needs it

    rgb = colormaps[cmap](np.clip(values / colour_ceiling(values), 0.0, 1.0))[..., :3]
    rows = np.arange(size[0]) * values.shape[0] // size[0]
    cols = np.arange(size[1]) * values.shape[1] // size[1]
    return (rgb[rows][:, cols] * 255).astype(np.uint8)


def _overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a colorized map over the image it belongs to (same size)."""
    h, w = heat.shape[:2]
    base = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)
    return ((1 - alpha) * base + alpha * heat.astype(np.float32)).astype(np.uint8)


def _tile_size(attention: AttentionSet) -> tuple[int, int]:
    """Pixels per small map: a model view stays around 900 px wide whatever the head count."""
    width = int(np.clip(880 // attention.heads, 64, 160))
    height = width if attention.task != "audio" else max(16, width // 4)
    return height, width


def model_view(attention: AttentionSet, selected: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """All layers (rows) x heads (columns) as small maps in one RGB image; the selected tile is
    framed in red. `tile_at` maps a click on this image back to (layer, head)."""
    th, tw = _tile_size(attention)
    rows, cols = attention.layers, attention.heads
    height = LABEL_MARGIN + rows * (th + TILE_PAD)
    width = LABEL_MARGIN + cols * (tw + TILE_PAD)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for layer in range(rows):
        for head in range(cols):
            cmap = "inferno" if attention.image is not None else "Blues"  # stands out against a photo
            tile = _colorize(tile_values(attention, attention.weights[layer, head]), (th, tw), cmap)
            if attention.image is not None:
                tile = _overlay(attention.image, tile)
            y, x = _tile_origin(layer, head, th, tw)
            canvas[y : y + th, x : x + tw] = tile
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=14)
    for head in range(cols):
        _, x = _tile_origin(0, head, th, tw)
        draw.text(
            (x + 2, 3), "rollout" if attention.kind == "rollout" else f"H{head + 1}", fill=(60, 60, 60), font=font
        )
    for layer in range(rows):
        y, _ = _tile_origin(layer, 0, th, tw)
        draw.text((1, y + th // 2 - 7), f"L{layer + 1}", fill=(60, 60, 60), font=font)
    layer, head = selected
    if layer is not None and head is not None:
        y, x = _tile_origin(layer, head, th, tw)
        draw.rectangle([x - 2, y - 2, x + tw + 1, y + th + 1], outline=(220, 30, 30), width=2)
    return np.asarray(picture)


def _tile_origin(layer: int, head: int, th: int, tw: int) -> tuple[int, int]:
    return LABEL_MARGIN + layer * (th + TILE_PAD), LABEL_MARGIN + head * (tw + TILE_PAD)


def tile_at(attention: AttentionSet, x: int, y: int) -> tuple[int, int] | None:
    """(layer, head) of the model-view tile under pixel (x, y), or None between tiles."""
    th, tw = _tile_size(attention)
    layer, dy = divmod(y - LABEL_MARGIN, th + TILE_PAD)
    head, dx = divmod(x - LABEL_MARGIN, tw + TILE_PAD)
    if y < LABEL_MARGIN or x < LABEL_MARGIN or dy >= th or dx >= tw:
        return None
    if layer >= attention.layers or head >= attention.heads:
        return None
    return int(layer), int(head)


def _name(attention: AttentionSet, layer: int | None, head: int | None) -> str:
    layer_name = "all layers averaged" if layer is None else f"layer {layer + 1}"
    if attention.kind == "rollout":
        through = "all layers" if layer is None else f"layers 1-{layer + 1}"
        return f"{attention.task}: attention rollout through {through}"
    head_name = "heads averaged" if head is None else f"head {head + 1}"
    return f"{attention.task}, {attention.kind}: {layer_name}, {head_name}"


def map_figure(attention: AttentionSet, weights: np.ndarray, title: str) -> go.Figure:
    """The enlarged map: token heatmap (text), overlay on the image (vision), strip over time (audio)."""
    if not attention.from_cls:
        q_axis, k_axis = {
            "cross": ("target token", "source token"),
            "decoder self": ("target token", "target token"),
        }.get(attention.kind, ("query token", "key token"))
        title = f"{title}<br><sub>colours saturate at the 99th percentile; hover for exact weights</sub>"
        fig = attention_heatmap(weights, attention.query_labels, attention.key_labels, "", q_axis, k_axis)
        fig.update_traces(zmax=colour_ceiling(weights))
        # the key axis sits on top: the title goes above it
        fig.update_layout(title={"text": title, "y": 0.97, "yanchor": "top"}, margin={"t": 140})
        return fig
    values = tile_values(attention, weights)
    cls_self = float(weights[0, 0])
    title = f"{title}<br><sub>CLS keeps {cls_self:.1%} on itself; colours scale to the largest other weight</sub>"
    if attention.patch_grid is not None:
        return _patch_figure(attention, values, title)
    return _frame_figure(attention, values[0], title)


def _patch_figure(attention: AttentionSet, values: np.ndarray, title: str) -> go.Figure:
    size = 320  # the image shown, in pixels
    rows, cols = values.shape
    png = io.BytesIO()
    Image.fromarray(attention.image).resize((size, size), Image.BILINEAR).save(png, format="PNG")
    # a PNG source, not a pixel array: small to send, and every plotly.js version draws it
    source = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    fig = go.Figure(go.Image(source=source, hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=values,
            x0=size / cols / 2,
            dx=size / cols,
            y0=size / rows / 2,
            dy=size / rows,
            colorscale="Hot",
            opacity=0.55,
            zmin=0.0,
            zmax=float(values.max()) or 1.0,
            customdata=np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1),
            hovertemplate="patch row %{customdata[1]}, col %{customdata[0]}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(title=title, height=460, margin={"l": 10, "r": 10, "t": 70, "b": 10})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _frame_figure(attention: AttentionSet, values: np.ndarray, title: str) -> go.Figure:
    """The CLS row as a strip over time, under the clip's log-mel spectrogram (shared time axis)."""
    from plotly.subplots import make_subplots

    times = attention.key_times if attention.key_times is not None else np.arange(len(values))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    if attention.spectrogram is not None:
        fig.add_trace(
            go.Heatmap(
                z=attention.spectrogram,
                x=attention.spectrogram_times,
                colorscale="Viridis",
                showscale=False,
                hovertemplate="t = %{x:.2f} s<br>mel band %{y}<br>%{z:.0f} dB<extra></extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Heatmap(
            z=values[None, :],
            x=times,
            y=["CLS"],
            colorscale="Hot",
            reversescale=True,
            zmin=0.0,
            zmax=float(values.max()) or 1.0,
            colorbar={"len": 0.3, "y": 0.15},
            hovertemplate="token at t = %{x:.2f} s<br>weight %{z:.3f}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_layout(title=title, height=380, margin={"l": 50, "r": 20, "t": 70, "b": 40})
    fig.update_yaxes(title_text="mel band", row=1, col=1)
    fig.update_xaxes(title_text="time in the prepared clip (s)", row=2, col=1)
    return fig


# ----------------------------------------------------------------------------------------------
# Per-head summary
# ----------------------------------------------------------------------------------------------


def head_pattern(weights: np.ndarray, square: bool) -> dict[str, float]:
    """Average share of each query's weight on the previous token, the first token and itself.

    Query 0 is left out where it has no previous token; a causal query 0 can only see itself.
    """
    t_q, t_k = weights.shape
    shares = {"first": float(weights[1:, 0].mean()) if t_q > 1 else float(weights[:, 0].mean())}
    if square and t_q > 1:
        idx = np.arange(1, t_q)
        shares["previous"] = float(weights[idx, idx - 1].mean())
        shares["same"] = float(weights[idx, idx].mean())
    return shares


def head_summary(attention: AttentionSet, top: int = 3) -> list[dict]:
    """One row per layer and head: entropy, most attended positions, and a tag for heads that
    mostly look at the previous token, the first token or the same token.

    Text: averaged over queries. Vision and audio: the CLS query's row (what the maps show)."""
    square = attention.kind in ("causal self", "encoder self", "decoder self")
    queries = attention.weights[:, :, :1] if attention.from_cls else attention.weights  # CLS row: what is shown
    entropy = attention_entropy(torch.from_numpy(queries)).numpy()  # (layers, heads), mean over queries
    keys = unique_labels(attention.key_labels)
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
            names = {"previous": "previous token", "same": "same token"}
            names["first"] = "CLS itself" if attention.from_cls else "first token"
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


# ----------------------------------------------------------------------------------------------
# The tab's function
# ----------------------------------------------------------------------------------------------


def parse_choice(choice: str | int | None) -> int | None:
    """'average' / None -> None; '3' or 3 (1-based, as shown) -> 2."""
    if choice is None or choice == AVERAGE or choice == "":
        return None
    try:
        return int(choice) - 1
    except ValueError:
        raise ValueError(f"Layer and head are numbers from 1 or '{AVERAGE}', not {choice!r}.") from None


def attention_map(
    task: str,
    kind: str,
    layer: str | int | None = AVERAGE,
    head: str | int | None = AVERAGE,
    text: str = "",
    image=None,
    audio=None,
    target: str = "de",
) -> AttentionMap:
    """One model's attention of `kind` for an input: layer and head are 1-based or 'average'."""
    attention = compute_attention(task, kind, text, image, audio, target)
    layer_i, head_i = parse_choice(layer), parse_choice(head)
    if attention.kind == "rollout":
        head_i = 0
    values = select(attention, layer_i, head_i)
    figure = map_figure(attention, values, _name(attention, layer_i, head_i))
    return AttentionMap(figure, model_view(attention, (layer_i, head_i)), head_summary(attention), values, attention)


def _choices(count: int) -> list[str]:
    return [AVERAGE] + [str(i + 1) for i in range(count)]


def build() -> None:
    available = [task for task in KINDS if has_checkpoint(task)]
    if not available:
        gr.Markdown("\n\n".join(missing_message(task) for task in KINDS))
        return
    missing = [task for task in KINDS if task not in available]
    gr.Markdown(
        "Pick a model and one of its attentions, give it an input, then choose a layer and head or "
        "click a small map in the model view. "
        + (f"Not available here: {', '.join(missing)} (no checkpoint)." if missing else "")
    )
    first = available[0]
    with gr.Row():
        # choices follow the chosen model; custom values let an API caller name any model, kind, layer
        # or head without a previous call, and get attention_map's own message when one does not exist
        task = gr.Dropdown(available, value=first, label="model", allow_custom_value=True)
        kind = gr.Dropdown(list(KINDS[first]), value=KINDS[first][0], label="attention", allow_custom_value=True)
        layer = gr.Dropdown([AVERAGE], value=AVERAGE, label="layer", allow_custom_value=True)
        head = gr.Dropdown([AVERAGE], value=AVERAGE, label="head", allow_custom_value=True)
    inputs = attention_inputs.input_components(first)
    show = gr.Button("Show attention", variant="primary")
    notes = gr.Markdown()
    gr.Markdown("Left: the chosen layer and head. Right: the model view, layers (rows) x heads (columns); click one.")
    with gr.Row():
        plot = gr.Plot(show_label=False)
        grid = gr.Image(show_label=False, interactive=False, buttons=["fullscreen"])
    summary = gr.Dataframe(label="per-head summary", wrap=True)
    gr.Markdown(
        "*previous / first / same*: the average share of each query's weight on the token before it, on the "
        f"first token, and on itself; a head is tagged when that share is over {TAG_THRESHOLD:.0%}. Entropy is "
        "in bits (0 = all weight on one key). Vision and audio: the CLS query's row, whose *first* is CLS itself."
    )

    all_inputs = [task, kind, layer, head, *inputs.components]

    def run(task_v, kind_v, layer_v, head_v, *values):
        try:
            result = attention_map(task_v, kind_v, layer_v, head_v, **inputs.values(task_v, values))
        except (MissingCheckpoint, ValueError) as error:
            raise gr.Error(str(error)) from None
        a = result.attention
        layer_u = gr.update(choices=_choices(a.layers), value=layer_v if layer_v in _choices(a.layers) else AVERAGE)
        head_count = 0 if a.kind == "rollout" else a.heads
        head_u = gr.update(choices=_choices(head_count), value=head_v if head_v in _choices(head_count) else AVERAGE)
        table = {"headers": list(result.summary[0]), "data": [list(row.values()) for row in result.summary]}
        return result.figure, result.model_view, table, " ".join(a.notes), layer_u, head_u

    outputs = [plot, grid, summary, notes, layer, head]
    # preprocess=False: an upload reaches the Image/Audio tabs' readers as a file, so one that is not
    # an image or a recording gets their message instead of Gradio's decoding error
    show.click(run, all_inputs, outputs, api_name="attention_map", preprocess=False, concurrency_id=CORES)
    for control in (kind, layer, head):
        control.input(run, all_inputs, outputs, api_visibility="private", concurrency_id=CORES)

    def pick(task_v, kind_v, layer_v, head_v, text_v, target_v, image_v, audio_v, evt: gr.SelectData):
        values = (text_v, target_v, image_v, audio_v)  # Gradio passes the click data after the inputs
        try:
            attention = compute_attention(task_v, kind_v, **inputs.values(task_v, values))
        except (MissingCheckpoint, ValueError) as error:
            raise gr.Error(str(error)) from None
        hit = tile_at(attention, *evt.index)
        if hit is None:
            return layer_v, head_v
        return str(hit[0] + 1), AVERAGE if attention.kind == "rollout" else str(hit[1] + 1)

    grid.select(pick, all_inputs, [layer, head], api_visibility="private", concurrency_id=CORES).then(
        run, all_inputs, outputs, api_visibility="private", concurrency_id=CORES
    )

    def switch(task_v):
        if task_v not in KINDS:
            raise gr.Error(f"Unknown model {task_v!r}; choose one of {', '.join(available)}.")
        return (gr.update(choices=list(KINDS[task_v]), value=KINDS[task_v][0]), *inputs.visibility(task_v))

    task.change(switch, task, [kind, *inputs.components], api_visibility="private", concurrency_id=CORES)
