"""Attention Maps tab: every layer and head of every model, for an input given in place.

Pick a model (demos/registry.py lists them) and one of its attentions. The input runs through
the model tab's own function (`attention_of` in demos/<model>.py, which calls what the tab
calls), so the maps show exactly what the other tabs' models see. `attention_map` is the plain
function behind `/attention_map`: the enlarged map of one layer/head (or their average), the
model view (all layers x heads; click a tile to enlarge it) and a per-head summary table.
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
from PIL import Image

from demos import attention_inputs, registry
from demos.common import (
    AVERAGE,
    AttentionView,
    MissingCheckpoint,
    UserError,
    checkpoint_dir,
    has_checkpoint,
    listen,
    missing_message,
    parse_selector,
    selector_choices,
    shows_errors,
    worked_example,
)
from demos.model_view import TAG_THRESHOLD, head_summary, model_view, tile_at, tile_values
from demos.plots import attention_heatmap, resize

TITLE = "Attention Maps"

# task -> the attentions it has, the first is the default (from the registry)
KINDS: dict[str, tuple[str, ...]] = {m.task: m.attention_kinds for m in registry.MODELS}
# axis names of the enlarged map, by kind
AXES = {
    "cross": ("target piece written", "source piece"),
    "decoder self": ("target piece written", "target piece read"),
    "encoder self": ("source piece", "source piece"),
}


@dataclass
class AttentionSet:
    """All layers and heads of one attention kind for one input, with what to draw it over."""

    task: str
    kind: str
    weights: np.ndarray  # (layers, heads, T_query, T_key); rollout: (layers, 1, T, T)
    query_labels: list[str]
    key_labels: list[str]
    from_cls: bool = False  # vision and audio: show what the CLS token (query 0) draws from the rest
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


@dataclass
class AttentionMap:
    """What `attention_map` returns: the enlarged map, the model view and the head summary."""

    figure: go.Figure
    model_view: np.ndarray  # (H, W, 3) uint8
    summary: list[dict]
    values: np.ndarray  # the enlarged map's numbers
    attention: AttentionSet


# ----------------------------------------------------------------------------------------------
# Running the models (through their tabs' own functions)
# ----------------------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple, AttentionView] = OrderedDict()
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


def has_input(task: str, text: str = "", image=None, audio=None) -> bool:
    """Whether the input `task`'s model reads has been given."""
    kind = registry.model(task).input
    if kind == registry.IMAGE:
        return image is not None
    if kind == registry.AUDIO:
        return audio is not None
    return bool(text and str(text).strip())


def _view(task: str, text: str, image, audio, target: str) -> AttentionView:
    """Run `task`'s tab function on the input once (cached per input): every kind at once."""
    entry = registry.model(task)
    if not has_input(task, text, image, audio):
        what = {registry.IMAGE: "Upload an image", registry.AUDIO: "Record or upload a clip"}
        raise UserError(f"{what.get(entry.input, 'Type some text')} first.")
    key = (str(checkpoint_dir(task)), task, text, target, _digest(image), _digest(audio))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    attention_of = entry.module().attention_of
    if entry.input == registry.IMAGE:
        view = attention_of(image)
    elif entry.input == registry.AUDIO:
        view = attention_of(audio)
    elif entry.input == registry.TEXT_TO_LANGUAGE:
        view = attention_of(text, target)
    else:
        view = attention_of(text)
    _CACHE[key] = view
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return view


def compute_attention(task: str, kind: str, text: str = "", image=None, audio=None, target: str = "de") -> AttentionSet:
    """Every layer's and head's weights of `kind` for the input; picking another layer, head or
    kind of the same input only redraws."""
    if task not in KINDS:
        raise UserError(f"Unknown model {task!r}; choose one of {', '.join(KINDS)}.")
    if kind not in KINDS[task]:
        raise UserError(f"The {task} model has no {kind!r} attention; it has {', '.join(KINDS[task])}.")
    if not has_checkpoint(task):
        raise MissingCheckpoint(missing_message(task))
    view = _view(task, text, image, audio, target)
    a = view.maps[kind]
    return AttentionSet(
        task,
        kind,
        a.weights.numpy(),
        a.query_labels,
        a.key_labels,
        from_cls=a.cls,
        image=view.image,
        patch_grid=a.grid,
        key_times=None if a.key_times is None else a.key_times.numpy(),
        spectrogram=view.spectrogram,
        spectrogram_times=view.spectrogram_times,
        notes=view.notes,
    )


# ----------------------------------------------------------------------------------------------
# The enlarged map
# ----------------------------------------------------------------------------------------------


def select(attention: AttentionSet, layer: int | None, head: int | None) -> np.ndarray:
    """(T_query, T_key) weights of one layer/head; None averages over layers or heads (0-based)."""
    w = attention.weights
    w = w.mean(axis=0) if layer is None else w[layer]
    return w.mean(axis=0) if head is None else w[head]


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
        q_axis, k_axis = AXES.get(attention.kind, ("query token", "key token"))
        return attention_heatmap(weights, attention.query_labels, attention.key_labels, title, q_axis, k_axis)
    values = tile_values(attention, weights)
    keeps = f"CLS keeps {float(weights[0, 0]):.1%} on itself; colours scale to the largest other weight"
    title = f"{title}<br><sub>{keeps}</sub>"
    if attention.patch_grid is not None:
        return _patch_figure(attention, values, title)
    return _frame_figure(attention, values[0], title)


def _patch_figure(attention: AttentionSet, values: np.ndarray, title: str) -> go.Figure:
    size = 320  # the image shown, in pixels
    rows, cols = values.shape
    png = io.BytesIO()
    Image.fromarray(resize(attention.image, (size, size))).save(png, format="PNG")
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
            colorscale="Inferno",  # demos.plots.OVERLAY_COLORMAP, as the Image tab's overlays
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
            colorscale="Inferno",  # demos.plots.OVERLAY_COLORMAP
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
# The tab's function
# ----------------------------------------------------------------------------------------------


def parse_choice(choice, count: int, what: str) -> int | None:
    """'average' / None -> None; '3' or 3 (1-based, as shown) -> 2; a UserError past `count`."""
    return parse_selector(choice, count, what)


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
    layer_i = parse_choice(layer, attention.layers, "layer")
    head_i = 0 if attention.kind == "rollout" else parse_choice(head, attention.heads, "head")
    values = select(attention, layer_i, head_i)
    figure = map_figure(attention, values, _name(attention, layer_i, head_i))
    return AttentionMap(figure, model_view(attention, (layer_i, head_i)), head_summary(attention), values, attention)


def _selectors(attention: AttentionSet, layer_v, head_v) -> tuple:
    """The layer and head dropdowns for this attention, keeping the choice where it still exists."""
    layers = selector_choices(attention.layers)
    heads = selector_choices(0 if attention.kind == "rollout" else attention.heads)
    return (
        gr.update(choices=layers, value=layer_v if str(layer_v) in layers else AVERAGE),
        gr.update(choices=heads, value=head_v if str(head_v) in heads else AVERAGE),
    )


def show(task_v, kind_v, layer_v, head_v, text_v, target_v, image_v, audio_v) -> tuple:
    """The tab's outputs for an input: map, model view, summary, notes, layer and head selectors."""
    inputs = attention_inputs.values(task_v, (text_v, target_v, image_v, audio_v))
    result = attention_map(task_v, kind_v, layer_v, head_v, **inputs)
    table = {"headers": list(result.summary[0]), "data": [list(row.values()) for row in result.summary]}
    return (result.figure, result.model_view, table, " ".join(result.attention.notes)) + _selectors(
        result.attention, layer_v, head_v
    )


def redraw(task_v, kind_v, layer_v, head_v, text_v, target_v, image_v, audio_v) -> tuple:
    """Another kind, layer or head picked: redraw, or, while there is no input yet, show nothing
    and say what is missing (no error: the person has not asked for a map yet)."""
    values = attention_inputs.values(task_v, (text_v, target_v, image_v, audio_v))
    if task_v in KINDS and not has_input(task_v, **{k: v for k, v in values.items() if k != "target"}):
        return cleared(task_v)[:4] + (gr.skip(), gr.skip())
    return show(task_v, kind_v, layer_v, head_v, text_v, target_v, image_v, audio_v)


def cleared(task_v) -> tuple:
    """Empty outputs for a model whose input is not there yet: map, view, summary, notes, layer,
    head (and, from the model switch, nothing else)."""
    entry = registry.model(task_v)
    ask = {registry.IMAGE: "Upload an image", registry.AUDIO: "Record or upload a clip"}.get(entry.input, "Type a text")
    note = f"{ask}, then press **Show attention**."
    average = gr.update(choices=[AVERAGE], value=AVERAGE)
    return None, None, None, note, average, average


def switch(task_v) -> tuple:
    """Another model: its kinds, its input widgets, and none of the previous model's results."""
    if task_v not in KINDS:
        raise UserError(f"Unknown model {task_v!r}; choose one of {', '.join(KINDS)}.")
    kinds = KINDS[task_v]
    return (gr.update(choices=list(kinds), value=kinds[0]), *attention_inputs.visibility(task_v), *cleared(task_v))


def pick(task_v, kind_v, layer_v, head_v, text_v, target_v, image_v, audio_v, evt: gr.SelectData):
    """A click on the model view: the layer and head of the tile under it."""
    values = attention_inputs.values(task_v, (text_v, target_v, image_v, audio_v))
    attention = compute_attention(task_v, kind_v, **values)
    hit = tile_at(attention, *evt.index)
    if hit is None:
        return layer_v, head_v
    return str(hit[0] + 1), AVERAGE if attention.kind == "rollout" else str(hit[1] + 1)


def build() -> None:
    available = [m for m in registry.MODELS if has_checkpoint(m.task)]
    if not available:
        gr.Markdown("\n\n".join(missing_message(task) for task in KINDS))
        return
    missing = [task for task in KINDS if task not in {m.task for m in available}]
    gr.Markdown(
        "Pick a model and one of its attentions, give it an input, then choose a layer and head or "
        "click a small map in the model view. "
        + (f"Not available here: {', '.join(missing)} (no checkpoint)." if missing else "")
    )
    first = available[0]
    # the tab opens with the first model's example text worked out (a model that reads images or
    # sounds has no example: it waits for an upload)
    shown = cleared(first.task)
    if first.input in attention_inputs.TEXT_INPUTS:
        example = (first.example, "de", None, None)
        shown = worked_example(show, first.task, KINDS[first.task][0], AVERAGE, AVERAGE, *example, fallback=shown)
    figure, view, table, note, layers, heads = shown
    with gr.Row():
        # custom values let an API caller name any model, kind, layer or head without a previous
        # call, and get attention_map's own message when one does not exist
        task = gr.Dropdown(
            [(m.title, m.task) for m in available], value=first.task, label="model", allow_custom_value=True
        )
        kinds = KINDS[first.task]
        kind = gr.Dropdown(list(kinds), value=kinds[0], label="attention", allow_custom_value=True)
        layer = gr.Dropdown(layers["choices"], value=AVERAGE, label="layer", allow_custom_value=True)
        head = gr.Dropdown(heads["choices"], value=AVERAGE, label="head", allow_custom_value=True)
    inputs = attention_inputs.input_components(first.task)
    button = gr.Button("Show attention", variant="primary")
    notes = gr.Markdown(note)
    gr.Markdown("Left: the chosen layer and head. Right: the model view, layers (rows) x heads (columns); click one.")
    with gr.Row():
        plot = gr.Plot(figure, show_label=False)
        grid = gr.Image(view, show_label=False, interactive=False, buttons=["fullscreen"])
    summary = gr.Dataframe(table, label="per-head summary", wrap=True)
    gr.Markdown(
        "*previous / first / same*: the average share of each query's weight on the token before it, on the "
        f"first token, and on itself; a head is tagged when that share is over {TAG_THRESHOLD:.0%}. Entropy is "
        "in bits (0 = all weight on one key). Vision and audio: the CLS query's row, whose *first* is CLS itself."
    )

    all_inputs = [task, kind, layer, head, *inputs]
    outputs = [plot, grid, summary, notes, layer, head]
    # preprocess=False: an upload reaches the Image/Audio tabs' readers as a file, so one that is not
    # an image or a recording gets their message instead of Gradio's decoding error
    listen(button.click, shows_errors(show), all_inputs, outputs, api_name="attention_map", preprocess=False)
    for control in (kind, layer, head):
        listen(control.input, shows_errors(redraw), all_inputs, outputs, preprocess=False)
    clicked = listen(grid.select, shows_errors(pick), all_inputs, [layer, head], preprocess=False)
    listen(clicked.then, shows_errors(redraw), all_inputs, outputs, preprocess=False)
    listen(task.change, shows_errors(switch), task, [kind, *inputs, *outputs])
