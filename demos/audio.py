"""The Audio tab: say a digit (or upload a recording) and our spectrogram transformer names it,
showing the log-mel spectrogram it heard and, under it, which moments its CLS token attended to.

`classify_audio(audio) -> AudioResult` is the plain inference function (tests and the API call
it); `build()` lays out the tab. Files are read with soundfile (WAV of any bit depth, FLAC, OGG,
...); a recording of any rate, channel count and length is brought to the model's 8 kHz mono by
`models.audio.prepare_waveform`, and whatever cannot be used is refused with a sentence saying why.
The example recordings are synthesised in demos/example_sounds.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from demos.audio_files import read_audio_file
from demos.common import (
    CORES,
    AttentionView,
    UserError,
    doubt_label,
    get_model,
    has_checkpoint,
    listen,
    missing_message,
    parse_selector,
    selector_choices,
    shows_errors,
)
from demos.example_sounds import examples
from demos.input_checks import InputRefused
from demos.tools import examples_that_run
from models.attention_data import Attention
from models.audio import RoutineNote, log_mel, prepare_waveform
from models.confidence import Verdict, audio_verdict

TITLE = "Audio"
TASK = "audio"


class BadAudio(UserError):
    """Input that is not usable audio; the message is meant for the person who sent it."""


@dataclass
class AudioResult:
    top3: dict[str, float]  # digit -> probability, most likely first
    spectrogram: np.ndarray  # (n_mels, frames) log-mel in dB of the prepared 8 kHz clip
    frame_times: np.ndarray  # (frames,) seconds
    token_times: np.ndarray  # (tokens,) seconds: centre of each frame-patch token
    token_seconds: float  # how much time one token covers
    cls_attention: np.ndarray  # (layers, heads, tokens): CLS-to-token weights
    rollout: np.ndarray  # (tokens,): attention rollout from CLS, sums to 1
    duration_s: float  # length of the prepared clip the model heard
    band_hz: np.ndarray  # (n_mels,) centre frequency of each mel band
    notes: list[str] = field(default_factory=list)
    attention: Attention | None = None  # every layer and head (models.attention_data)
    verdict: Verdict | None = None  # whether it sounded like a spoken digit at all


def read_audio(path: str | Path) -> tuple[int, np.ndarray, list[str]]:
    """An audio file -> (sample rate, float32 mono samples, notes). Raises BadAudio.

    demos.audio_files.read_audio_file decides from the header how much to decode (a file's cost is
    bounded by what the model can use, not by what its header claims)."""
    path = Path(path)
    if not path.is_file():
        raise BadAudio(f"No such file: {path.name}.")
    try:
        return read_audio_file(path)
    except InputRefused as err:
        raise BadAudio(str(err)) from None


def classify_audio(audio) -> AudioResult:
    """A file path or a (sample_rate, samples) tuple (as gr.Audio gives) -> top 3 digits, the
    spectrogram, CLS attention over time and notes. Raises BadAudio, or MissingCheckpoint."""
    if audio is None:
        raise BadAudio("No audio: record a digit with the microphone or upload a recording first.")
    if isinstance(audio, (str, Path)):
        rate, samples, notes = read_audio(audio)
    elif isinstance(audio, (tuple, list)) and len(audio) == 2:
        rate, samples = audio
        notes = []
    else:
        raise BadAudio(f"Expected a file path or a (sample_rate, samples) pair, got {type(audio).__name__}.")
    model, _ = get_model(TASK)
    c = model.config
    try:
        waveform, prepare_notes = prepare_waveform(np.asarray(samples), rate, c)
    except ValueError as err:
        raise BadAudio(str(err)) from None
    with torch.inference_mode():
        run = model.attention(waveform[None])  # the maps: the clip as recorded
        probs = model.probabilities([waveform])[0]  # the answer: also heard 10% slower and faster
    attention = run["self"]
    top = probs.topk(3)
    verdict = audio_verdict(waveform.numpy(), probs, c.sample_rate)  # noise, a tone, a rumble, an unsure model
    spec = log_mel(waveform, c)
    n_tokens = attention.weights.shape[-1] - 1
    return AudioResult(
        top3={c.class_names[i]: float(p) for p, i in zip(top.values, top.indices, strict=True)},
        spectrogram=spec,
        frame_times=c.frame_times(spec.shape[1]),
        token_times=c.token_times(n_tokens),
        token_seconds=c.patch_frames * c.hop_length / c.sample_rate,
        cls_attention=attention.cls_rows().numpy(),
        rollout=attention.cls_rollout().numpy(),
        duration_s=waveform.numel() / c.sample_rate,
        band_hz=model.band_hz(),
        notes=notes + prepare_notes + verdict.reasons,
        attention=attention,
        verdict=verdict,
    )


def attention_of(audio) -> AttentionView:
    """The Attention Maps tab's view of classify_audio: the CLS token's attention to each moment
    and its rollout, drawn under the spectrogram of the prepared clip."""
    result = classify_audio(audio)
    best, p = next(iter(result.top3.items()))
    return AttentionView(
        {"CLS to frames": result.attention, "rollout": result.attention.as_rollout()},
        result.notes + [f"The model hears {best} ({p:.0%})."],
        spectrogram=result.spectrogram,
        spectrogram_times=result.frame_times,
    )


def attention_over_time(result: AudioResult, layer: int | None = None, head: int | None = None) -> np.ndarray:
    """(tokens,) CLS attention: rollout when layer is None, else that layer's head (None: mean)."""
    if layer is None:
        return result.rollout
    weights = result.cls_attention[layer]
    return weights.mean(0) if head is None else weights[head]


def spectrogram_figure(result: AudioResult, layer: int | None = None, head: int | None = None):
    """The log-mel spectrogram with the CLS attention drawn under it on the same time axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    which = (
        "attention rollout (all layers)"
        if layer is None
        else f"layer {layer + 1}, " + ("mean of heads" if head is None else f"head {head + 1}")
    )
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06)
    fig.add_trace(
        go.Heatmap(
            z=result.spectrogram,
            x=result.frame_times,
            colorscale="Magma",
            colorbar={"title": "dB", "len": 0.6, "y": 0.7},
            customdata=np.repeat(result.band_hz[:, None], result.spectrogram.shape[1], axis=1),
            hovertemplate="%{x:.2f} s<br>mel band %{y} (%{customdata:.0f} Hz)<br>%{z:.0f} dB<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=result.token_times,
            y=attention_over_time(result, layer, head),
            width=result.token_seconds,
            marker_color="#e4572e",
            hovertemplate="%{x:.2f} s<br>attention %{y:.3f}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    ticks = np.arange(0, len(result.band_hz), 8)
    fig.update_yaxes(
        title_text="frequency (Hz)", tickvals=ticks, ticktext=[f"{result.band_hz[i]:.0f}" for i in ticks], row=1, col=1
    )
    fig.update_yaxes(title_text="CLS attention", row=2, col=1, rangemode="tozero")
    fig.update_xaxes(title_text="time (s)", row=2, col=1, range=[0, max(result.duration_s, 0.05)])
    fig.update_layout(
        title=f"What the model heard, and where its CLS token looked: {which}",
        height=460,
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        showlegend=False,
    )
    return fig


# ----------------------------------------------------------------------------------------------
# The tab
# ----------------------------------------------------------------------------------------------

ROLLOUT = "rollout (all layers)"
MEAN = "mean of heads"


def redraw(result: AudioResult | None, layer_name: str, head_name: str):
    """The figure for another layer ('rollout (all layers)' or 1, 2, ...) and head ('mean of
    heads' or 1, 2, ...), from the kept result (no rerun of the model)."""
    if result is None:
        return None
    layers, heads = result.cls_attention.shape[:2]
    layer = parse_selector(layer_name, layers, "layer", special=(ROLLOUT,))
    head = parse_selector(head_name, heads, "head", special=(MEAN,))
    return spectrogram_figure(result, layer, head)


def classify_handler(audio, layer_name: str = ROLLOUT, head_name: str = MEAN):
    """The tab's (and /classify_audio's) handler: mistakes become gr.Error, notes gr.Warning."""
    import gradio as gr

    try:
        result = classify_audio(audio)
        figure = redraw(result, layer_name, head_name)
    except UserError as err:  # BadAudio, MissingCheckpoint, a layer or head that does not exist
        raise gr.Error(str(err)) from None
    for note in result.notes:
        if not isinstance(note, RoutineNote):  # routine steps are listed, not warned
            gr.Warning(note)
    summary = f"Heard {result.duration_s:.2f} s after trimming silence." + "".join(f"\n- {n}" for n in result.notes)
    return result.top3, figure, summary, result


def label_doubt(result: AudioResult | None) -> dict:
    """The top-3 label's headline and title for a result (demos.common.doubt_label)."""
    unsure = result is not None and result.verdict is not None and not result.verdict.known
    return doubt_label("Top 3 digits", "No clear digit heard: the model's guesses, not an answer" if unsure else None)


def build() -> None:
    import gradio as gr

    if not has_checkpoint(TASK):
        gr.Markdown(missing_message(TASK))
        return
    model, _ = get_model(TASK)
    c = model.config
    token_ms = 1000 * c.patch_frames * c.hop_length / c.sample_rate
    stem = (
        " Before the tokens are cut, two small convolutions slide along the spectrogram's bands, so a higher or "
        "lower voice gives the same features a band or two over."
        if c.stem == "conv"
        else ""
    )
    gr.Markdown(
        f"Say one digit (zero to nine, in English) or upload a recording. A transformer trained from scratch "
        f"on the Free Spoken Digit Dataset (six speakers) hears it at {c.sample_rate // 1000} kHz as a log-mel "
        f"spectrogram ({c.n_mels} bands, a frame every {1000 * c.hop_length // c.sample_rate} ms), cut into "
        f"tokens of {token_ms:.0f} ms, plus a CLS token whose final state is classified.{stem} Under the spectrogram: "
        "how much the CLS token attended to each moment. Recordings are mixed to mono, resampled, trimmed of "
        f"silence, cut to the loudest {c.clip_seconds:g} s and set to a fixed loudness first. Your voice is not "
        "one of the six it learned from, so expect mistakes; to meet a higher or lower voice halfway, the "
        "answer averages what the model hears at the recorded speed, 10% slower and 10% faster."
    )
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="A spoken digit")
            run = gr.Button("Classify", variant="primary")
            paths, labels = zip(*examples(), strict=True)
            example_set = gr.Examples(
                [[p] for p in paths],
                inputs=audio,
                example_labels=[f"{label}: synthetic, not a real voice" for label in labels],
                label="Synthesised examples (no real speech; the model may name any digit)",
            )
        with gr.Column():
            top3 = gr.Label(num_top_classes=3, label="Top 3 digits")
            notes = gr.Markdown()
    with gr.Row():
        # the selector format of every tab (demos.common): a name for the summary, then 1, 2, ...
        layer = gr.Dropdown(selector_choices(c.n_layers, first=ROLLOUT), value=ROLLOUT, label="Layer")
        head = gr.Dropdown(selector_choices(c.n_heads, first=MEAN), value=MEAN, label="Head")
    plot = gr.Plot(label="Log-mel spectrogram and CLS attention over time")
    state = gr.State()

    classified = listen(
        run.click, classify_handler, [audio, layer, head], [top3, plot, notes, state], api_name="classify_audio"
    )
    example_run = examples_that_run(example_set, classify_handler, [audio, layer, head], [top3, plot, notes, state])
    for event in (classified, example_run):
        event.success(label_doubt, state, top3, api_visibility="private", concurrency_id=CORES)
    for control in (layer, head):
        control.change(shows_errors(redraw), [state, layer, head], plot, api_visibility="private", concurrency_id=CORES)
