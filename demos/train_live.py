"""The Train tab: train a small transformer in front of you, and an RNN beside it.

`/train_live` streams a snapshot about once a second: learning curves, the attention of every
layer and head, sample predictions, accuracy on longer held-out inputs. Play continues the run
(for at most MAX_SECONDS), Pause stops it where it is, Step trains a few steps, Reset forgets it.

Fair use of a 2-core machine: the run trains in the request's own thread (the app runs one torch
thread per request), each visitor has one run, and at most TRAINERS_AT_ONCE visitors train at
once (one less than the app's concurrency), so another tab always finds a core free.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd

from demos.common import UserError, listen, shows_errors
from demos.train_live_plots import attention_grid, learning_curves
from models.live_training import POSITIONALS, RNNS, TASKS, LiveRun, Settings, Snapshot

TITLE = "Train"
MAX_SECONDS = 60  # one Play trains for at most this long
SLICE_S = 1.0  # training between two snapshots
STEP_STEPS = 10  # what Step trains
TRAINERS_AT_ONCE = max(1, int(os.environ.get("PLAYGROUND_CONCURRENCY", "2")) - 1)
RUNS_KEPT = 8  # runs kept in memory at once (the largest model allowed, with Adam's state, is ~120 MB)
STALE_S = 5.0  # a stream that has not reported for this long was cancelled (a slice takes ~1-2 s)
NORMS = ("pre-norm", "post-norm (the paper)")
ATTENTION_VIEWS = ("cross", "encoder self", "decoder self", "self", "RNN cross")

SAMPLE_TEXT = (
    "The harbour wakes before the town does. At five the first boats slide out past the red light on the "
    "pier, their engines low and patient, and the gulls follow them in a loose white cloud. By six the fish "
    "market has opened its shutters; men in yellow boots hose down the stone floor and stack the empty crates "
    "in towers that lean a little more each year. The baker on the corner sets out his trays of bread, and the "
    "smell drifts down the hill to the water, where it meets the smell of salt, diesel and rope. Children walk "
    "to school along the sea wall, counting the boats that have already left and guessing which will come back "
    "first. In winter the wind comes straight off the sea and the waves climb over the wall, so the children "
    "take the long way round, through the narrow lanes behind the church. Old Mrs Pender watches them from her "
    "window and knows each of them by the colour of their coat. At noon the boats begin to return, low in the "
    "water if the catch was good, riding high if it was not. Nobody asks; you can read it from the hill. In the "
    "afternoon the town is quiet. The café by the lifeboat station fills with walkers who have come along the "
    "cliff path, and they sit with their boots steaming under the tables while the owner tells them about the "
    "storm of nineteen fifty-three, which she did not see but has told so often that she might as well have. "
    "Evening brings the tide back up the beach, over the footprints and the sandcastles and the lost spade that "
    "someone will look for tomorrow. The lights come on along the front one by one, and the lighthouse begins "
    "its slow count across the bay: a long flash, a short one, and a long dark wait before it starts again."
)


@dataclass(frozen=True)
class Preset:
    name: str
    lesson: str  # what to look for, in one sentence
    changes: dict = field(default_factory=dict)  # the knobs it sets (the others take their defaults)
    contrast: dict = field(default_factory=dict)  # the change that undoes the lesson (bench/train_lessons.py)
    steps: int = 600  # the budget the lesson is measured at (tests/test_train_live.py, bench/train_lessons.py)

    def settings(self, contrast: bool = False, **more) -> Settings:
        text = {"text": SAMPLE_TEXT} if self.changes.get("task") == "text" else {}
        return Settings(**{**text, **self.changes, **(self.contrast if contrast else {}), **more})


PRESETS = (
    Preset(
        "Reverse, with positions (and a GRU beside it)",
        "Watch the cross-attention: an anti-diagonal appears (output i reads input n-1-i) as sequence accuracy "
        "passes 95%; the GRU with attention needs more sequential steps per example (source + target length "
        "against the transformer's 2 per layer pair), and neither copes with inputs longer than it trained on.",
        {"task": "reverse", "rnn": "gru+attention"},
        {"rnn": "gru"},
        steps=1500,  # at 900 the final accuracy sat at 92-98% by seed and thread count: too close to the claim
    ),
    Preset(
        "Reverse, no positional encoding",
        "Without positions the encoder sees a bag of letters: the loss flattens and sequence accuracy stays "
        "near zero (try 'sort': it needs no order, and learns).",
        {"task": "reverse", "positional": "none"},
        {"positional": "sinusoidal"},
        steps=900,
    ),
    Preset(
        "No sqrt(d_k) scaling, wide heads",
        "Two heads of width 64 without the 1/sqrt(d_k) factor: the scores are ~8 times too large, the softmax "
        "saturates (one-hot attention maps from the first step) and the loss stalls; switch scaling back on and "
        "the same model learns.",
        {"task": "reverse", "width": 128, "heads": 2, "scaled": False},
        {"scaled": True},
        steps=300,
    ),
    Preset(
        "No warmup, high learning rate, post-norm",
        "The paper's post-norm layout at learning rate 0.01 from the first step: the first updates are too large "
        "for the fresh layers and the loss crawls (at 0.03 it never leaves the plateau of guessing letter "
        "frequencies); set warmup to 200 steps and the same rate trains several times faster.",
        {"task": "reverse", "lr": 0.01, "warmup": 0, "norm_first": False},
        {"warmup": 200},
        steps=300,
    ),
    Preset(
        "Label smoothing on a short text",
        "Compare confidence with accuracy (and their gap, the ECE) in the table: with smoothing 0.1 the model's "
        "confidence on the held-back text tracks its accuracy more closely than with smoothing 0.",
        {"task": "text", "label_smoothing": 0.1},
        {"label_smoothing": 0.0},
        steps=400,
    ),
)
PRESET_NAMES = ["(your own settings)"] + [p.name for p in PRESETS]


@dataclass
class Session:
    """One visitor's run (kept in gr.State). `play` counts Play/Pause/Step/Reset presses: a stream
    stops as soon as a newer press exists, so a visitor never trains two runs at once."""

    run: LiveRun | None = None
    play: int = 0
    last: Snapshot | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_running: dict[str, tuple[int, float]] = {}  # session hash -> (its stream's Play number, last report)
_running_lock = threading.Lock()
_kept: OrderedDict[int, weakref.ref] = OrderedDict()  # sessions holding a run, least recently used first


def _take_slot(session_hash: str, play: int) -> None:
    """Claim (or renew) a training slot for this visitor's stream; a UserError when none is free."""
    with _running_lock:
        now = time.monotonic()
        for key in [k for k, (_, beat) in _running.items() if now - beat > STALE_S]:
            del _running[key]
        if session_hash not in _running and len(_running) >= TRAINERS_AT_ONCE:
            raise UserError(
                f"Someone else is training right now (this 2-core machine trains {TRAINERS_AT_ONCE} run at a time, "
                f"at most {MAX_SECONDS} s each, so the other tabs stay quick); press Play again in a minute."
            )
        _running[session_hash] = (play, now)


def _release_slot(session_hash: str, play: int) -> None:
    """Free the slot, unless a newer Play of the same visitor holds it now."""
    with _running_lock:
        if _running.get(session_hash, (None,))[0] == play:
            del _running[session_hash]


def settings_from(task, text, layers, heads, width, positional, scaled, causal, norm, lr, warmup, label_smoothing,
                  dropout, teacher_forcing, rnn, seed) -> Settings:  # fmt: skip
    """The knobs as Settings; a UserError that says what to change when one is out of range."""
    try:
        settings = Settings(
            task=str(task), text=str(text or "") if task == "text" else "", layers=int(layers), heads=int(heads),
            width=int(width), positional=str(positional), scaled=bool(scaled), causal=bool(causal),
            norm_first=_norm_first(norm), lr=float(lr),
            warmup=int(warmup), label_smoothing=float(label_smoothing), dropout=float(dropout),
            teacher_forcing=float(teacher_forcing), rnn=str(rnn), seed=int(seed),
        )  # fmt: skip
        settings.check()
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None
    return settings


def _norm_first(norm: str) -> bool:
    if norm not in NORMS:
        raise UserError(f"Layer norm goes {' or '.join(repr(n) for n in NORMS)}; got {norm!r}.")
    return norm == NORMS[0]


def _session_for(session: Session | None, settings: Settings) -> tuple[Session, str]:
    """The visitor's session with a run for `settings` (a new run when any knob changed)."""
    session = session or Session()
    note = ""
    if session.run is None or session.run.settings != settings:
        note = "A new run started." if session.run is not None else ""
        session.run, session.last = LiveRun(settings), None
    _keep(session)
    return session, note


def _keep(session: Session) -> None:
    """Remember that `session` holds a run; past RUNS_KEPT runs the least recently used one is
    dropped (its visitor's next Play starts afresh), so memory stays bounded however many come."""
    with _running_lock:
        _kept.pop(id(session), None)
        _kept[id(session)] = weakref.ref(session)
        while len(_kept) > RUNS_KEPT:
            _, oldest = _kept.popitem(last=False)
            if (old := oldest()) is not None:
                old.run, old.last = None, None


FIGURES = (
    "steps",
    "seconds of training",
    "train loss",
    "validation loss",
    "validation accuracy",
    "accuracy on longer inputs",
    "sequential steps per example",
    "confidence / accuracy (ECE)",
)


def status_table(snapshot: Snapshot, run: LiveRun) -> str:
    """One column per model, one row per figure: two narrow columns fit beside the controls."""
    columns = {}
    for name, points in snapshot.histories.items():
        p, cal = points[-1], snapshot.calibration[name]
        header = f"{name} **diverged**" if snapshot.diverged[name] else name
        columns[header] = (
            f"{p.step}",
            f"{p.time_s:.1f}",
            f"{p.train_loss:.3f}",
            f"{p.val_loss:.3f}",
            f"{p.val_accuracy:.0%}",
            f"{p.heldout_accuracy:.0%}",
            f"{snapshot.sequential_steps[name]}",
            f"{cal['confidence']:.2f} / {cal['accuracy']:.2f} ({cal['ece']:.3f})",
        )
    rows = ["| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    rows += [
        f"| {figure} | " + " | ".join(values) + " |" for figure, *values in zip(FIGURES, *columns.values(), strict=True)
    ]
    task = run.task
    lengths = (
        f"context {task.context}, held-out context {task.heldout_context}"
        if run.is_text
        else f"training lengths {task.lengths[0]}-{task.lengths[1]}, held-out {task.heldout[0]}-{task.heldout[1]}"
    )
    return f"**{task.name}**: {task.description} ({lengths})\n\n" + "\n".join(rows)


def heldout_table(snapshot: Snapshot) -> pd.DataFrame:
    lengths = sorted({n for by_length in snapshot.heldout_by_length.values() for n in by_length})
    data = {"length": lengths}
    for name, by_length in snapshot.heldout_by_length.items():
        data[name] = [f"{by_length.get(n, float('nan')):.0%}" for n in lengths]
    return pd.DataFrame(data)


def attention_figure(snapshot: Snapshot | None, view: str):
    if snapshot is None:
        return None
    kind = view if view in snapshot.attention else next(iter(snapshot.attention))
    weights, queries, keys = snapshot.attention[kind]
    return attention_grid(weights, queries, keys, f"{kind} attention on one validation example (rows: queries)")


def render(session: Session, view: str, note: str = ""):
    """What the outputs show for the session's latest snapshot."""
    snapshot = session.last
    status = status_table(snapshot, session.run)
    return (
        session,
        (f"{note}\n\n" if note else "") + status,
        learning_curves(snapshot.histories),
        attention_figure(snapshot, view),
        pd.DataFrame(snapshot.samples),
        heldout_table(snapshot),
    )


@shows_errors
def train_live(*args, request: gr.Request | None = None):
    """Stream a run: knobs, seconds (at most MAX_SECONDS), attention view; resumes the visitor's run."""
    *knobs, seconds, view, session = args
    settings = settings_from(*knobs)
    seconds = float(seconds)
    if not 1 <= seconds <= MAX_SECONDS:
        raise UserError(f"A run trains for 1 to {MAX_SECONDS} seconds at a time; got {seconds:g}.")
    session, note = _session_for(session, settings)
    session.play += 1
    me = session.play
    key = request.session_hash if request is not None and request.session_hash else str(id(session))
    _take_slot(key, me)
    try:
        end = time.monotonic() + seconds
        slice_s = SLICE_S
        while session.play == me and time.monotonic() < end:
            with session.lock:
                if session.run is None:  # dropped for newer visitors' runs (RUNS_KEPT)
                    return
                session.run.train_for(min(slice_s, max(0.05, end - time.monotonic())))
                evaluated = time.monotonic()
                session.last = session.run.snapshot()
                # on a busy machine evaluating takes longer: train at least as long as it took
                slice_s = max(SLICE_S, time.monotonic() - evaluated)
            _take_slot(key, me)  # the heartbeat
            _keep(session)
            yield render(session, view, note)
            if all(session.last.diverged.values()):
                break
    finally:
        _release_slot(key, me)


@shows_errors
def train_step(*args):
    """Train STEP_STEPS steps and show the result."""
    *knobs, view, session = args
    session, note = _session_for(session, settings_from(*knobs))
    session.play += 1  # stops a running stream
    with session.lock:
        session.run.train_for(60.0, max_steps=STEP_STEPS)
        session.last = session.run.snapshot()
    return render(session, view, note)


def pause(session: Session | None):
    if session is not None:
        session.play += 1
    return session


def reset(session: Session | None):
    if session is not None:
        session.play += 1
        session.run, session.last = None, None
    return session, "Reset: press Play to start a new run.", None, None, None, None


def show_attention(view: str, session: Session | None):
    return attention_figure(session.last if session is not None else None, view)


def apply_preset(name: str):
    """The knob values of a preset (defaults for the knobs it leaves alone) and its lesson."""
    defaults = Settings()
    preset = next((p for p in PRESETS if p.name == name), None)
    if preset is None:
        return [gr.update()] * 13 + ["Choose a preset to see what it shows."]
    s = Settings(**{**defaults.__dict__, **preset.changes})
    values = [s.task, s.layers, s.heads, s.width, s.positional, s.scaled, s.causal, NORMS[0 if s.norm_first else 1],
              s.lr, s.warmup, s.label_smoothing, s.dropout, s.rnn]  # fmt: skip
    return values + [f"**What to look for.** {preset.lesson}"]


def build() -> None:
    d = Settings()
    gr.Markdown(
        "Train a small transformer here, on this machine's CPU, and watch it learn: the loss, the accuracy, the "
        "attention of every layer and head, and the same task learned by a recurrent network beside it."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            preset = gr.Dropdown(PRESET_NAMES, value=PRESET_NAMES[0], label="Preset (one lesson each)")
            lesson = gr.Markdown("Choose a preset to see what it shows.")
            task = gr.Dropdown(list(TASKS), value=d.task, label="Task")
            text = gr.Textbox(
                SAMPLE_TEXT, lines=4, max_lines=8, label="Your text (task 'text')", max_length=2000, visible=False
            )
            with gr.Row():
                layers = gr.Slider(1, 4, d.layers, step=1, label="Layers")
                heads = gr.Slider(1, 8, d.heads, step=1, label="Heads")
                width = gr.Slider(16, 256, d.width, step=16, label="Width (d_model)")
            positional = gr.Radio(list(POSITIONALS), value=d.positional, label="Positional encoding")
            with gr.Row():
                scaled = gr.Checkbox(d.scaled, label="Scale scores by 1/sqrt(d_k)")
                causal = gr.Checkbox(d.causal, label="Causal mask in the decoder")
            norm = gr.Radio(list(NORMS), value=NORMS[0], label="Residual + LayerNorm")
            with gr.Row():
                lr = gr.Number(d.lr, label="Learning rate", minimum=1e-5, maximum=1.0)
                warmup = gr.Slider(0, 1000, d.warmup, step=10, label="Warmup steps")
            with gr.Row():
                smoothing = gr.Slider(0, 0.5, d.label_smoothing, step=0.05, label="Label smoothing")
                dropout = gr.Slider(0, 0.5, d.dropout, step=0.05, label="Dropout")
                forcing = gr.Slider(0, 1, d.teacher_forcing, step=0.05, label="Teacher forcing")
            rnn = gr.Dropdown(list(RNNS), value=d.rnn, label="Recurrent model beside it")
            with gr.Row():
                seed = gr.Number(d.seed, label="Seed", precision=0)
                seconds = gr.Slider(1, MAX_SECONDS, 30, step=1, label="Seconds per Play")
            with gr.Row():
                play = gr.Button("Play", variant="primary")
                pause_button = gr.Button("Pause")
                step = gr.Button("Step")
                reset_button = gr.Button("Reset")
        with gr.Column(scale=2):
            status = gr.Markdown("Press Play to train.")
            curves = gr.Plot(label="Learning curves", show_label=False)  # a label would cover a subplot title
            view = gr.Radio(list(ATTENTION_VIEWS), value="cross", label="Attention")
            attention = gr.Plot(label="Attention, every layer (rows) and head (columns)")
            samples = gr.Dataframe(label="Predictions on validation examples", wrap=True)
            heldout = gr.Dataframe(label="Sequence accuracy on longer inputs than any seen in training")
    session = gr.State(None)
    knobs = [task, text, layers, heads, width, positional, scaled, causal, norm, lr, warmup, smoothing, dropout,
             forcing, rnn, seed]  # fmt: skip
    outputs = [session, status, curves, attention, samples, heldout]
    running = listen(play.click, train_live, [*knobs, seconds, view, session], outputs, api_name="train_live")
    listen(pause_button.click, pause, [session], [session], cancels=[running])
    listen(step.click, train_step, [*knobs, view, session], outputs)
    listen(reset_button.click, reset, [session], outputs, cancels=[running])
    listen(view.change, show_attention, [view, session], [attention])
    preset_knobs = [task, layers, heads, width, positional, scaled, causal, norm, lr, warmup, smoothing, dropout, rnn]
    listen(preset.change, apply_preset, [preset], [*preset_knobs, lesson])
    listen(task.change, lambda name: gr.update(visible=name == "text"), [task], [text])
