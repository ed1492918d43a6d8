"""The Forward Pass tab: the whole forward pass of a decoder, step by step, for one position.

For the Shakespeare GPT (a prompt) or the translation model's decoder (a source sentence and its
greedy translation): token and position in; per layer LayerNorm -> Q, K, V -> attention ->
residual add (-> cross-attention) -> LayerNorm -> feed-forward -> residual add; then the final
LayerNorm, the logits, temperature, the top-k/top-p cut and the sampled token. The numbers come
from `models.introspect` (the model's own sub-modules) and the sampler is models/decoding.py's.
Beside it: what each sub-layer adds to the residual stream, and the logit lens. Below it, every
generated character explained (demos/explain.py).

Plain functions (tests call them): `forward_pass(...) -> Walkthrough`, `render_step`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd
import torch
from torch import Tensor

from demos import explain, generation
from demos import forward_views as views
from demos import translation as translation_tab
from demos.common import UserError, get_model, has_checkpoint, listen, shows_errors
from demos.forward_step import step_view
from demos.plots import char_label
from models.decoding import filter_logits, greedy, sample
from models.introspect import ForwardTrace, trace_decoder, trace_gpt
from models.translation import EOS_ID, language_id, max_output_len

TITLE = "Forward Pass"
MODELS = {"generation": "Shakespeare GPT (decoder-only)", "translation": "translation decoder (cross-attention)"}
DIRECTIONS = ("en→de", "en→fr", "de→en", "fr→en")
EXAMPLES = {
    "generation": "ROMEO:\nBut soft, what light through yonder window breaks?",
    "translation": "A little girl is climbing into a wooden playhouse.",
}


class InputError(UserError):
    """A request the person can fix; the message says how."""


@dataclass
class Walkthrough:
    """One forward pass, looked at from one position, and the sampling step after it."""

    task: str
    labels: list[str]  # the decoder's tokens as shown
    position: int
    trace: ForwardTrace
    steps: list[views.Step]
    label: Callable[[int], str]  # token id -> how it is shown
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int
    tempered: Tensor  # softmax(logits / T) at the position, before any cut
    probs: Tensor  # what the sampler draws from: models.decoding.filter_logits
    sampled: int  # what models.decoding.sample drew with this seed
    next_token: int | None  # the token that really follows (None after the last one)
    source_labels: list[str] | None = None  # translation: the encoder's tokens
    notes: list[str] = field(default_factory=list)


def model_task(value) -> str:
    """'generation', 'translation' or their titles -> the task name."""
    for task, title in MODELS.items():
        if value in (task, title):
            return task
    raise InputError(f"Pick a model: {' or '.join(repr(t) for t in MODELS.values())}, not {value!r}.")


def check_position(position, count: int) -> int:
    """None or '' -> the last position; otherwise a whole number 0..count-1, or InputError."""
    if position is None or position == "":
        return count - 1
    try:
        number = float(position)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 0 <= number < count:
        raise InputError(
            f"Position {position!r} is out of range: the sequence has {count} token(s), positions 0 to {count - 1}."
        )
    return int(number)


def _gpt_sequence(text: str) -> tuple[list[int], list[str], list[str]]:
    model, tokenizer = get_model("generation")
    notes = []
    unknown = tokenizer.unknown(text)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10])
        notes.append(f"Left out {len(unknown)} character(s) the model never saw: {shown}.")
    ids = tokenizer.encode(text)
    if not ids:
        raise InputError("Type a prompt first: the walkthrough needs at least one character the model knows.")
    if len(ids) > model.context_len:
        raise InputError(
            f"The prompt has {len(ids)} characters but this model reads at most {model.context_len}: shorten it."
        )
    return ids, [char_label(c) for c in tokenizer.decode(ids)], notes


def _translation_sequence(text: str, direction: str):
    """Source ids, the decoder input ([language] + the greedy translation) and its next tokens."""
    model, tokenizer = get_model("translation")
    if direction not in DIRECTIONS:
        raise InputError(f"Pick a direction from {', '.join(DIRECTIONS)}, not {direction!r}.")
    text = "" if text is None else str(text).strip()
    if not text:
        raise InputError("Type a sentence first: the decoder needs a source to translate.")
    try:
        source, notes = translation_tab.read_source(tokenizer, text, model.config.max_len)
    except translation_tab.InputError as error:
        raise InputError(str(error)) from None
    memory, mask, _ = model.encode(torch.tensor([source]))
    decoder = model.target_decoder(memory, mask)
    start = language_id(tokenizer, direction[-2:])
    output = greedy(decoder, torch.tensor([[start]]), max_output_len(model, len(source)), EOS_ID)[0].tolist()
    target = [start] + [t for t in output if t != EOS_ID]
    return source, target, output, decoder, notes


@torch.inference_mode()
def forward_pass(
    task: str = "generation",
    text: str = EXAMPLES["generation"],
    position=None,
    temperature: float = 0.8,
    top_k=None,
    top_p=None,
    seed=0,
    direction: str = "en→de",
) -> Walkthrough:
    """The forward pass of `task`'s model on `text`, seen from `position` (None: the last), with
    sampling after it. Raises InputError for what a person can fix."""
    task = model_task(task)
    model, tokenizer = get_model(task)
    text = "" if text is None else str(text)
    try:
        sampling = generation.check_sampling(temperature, explain.zero_is_off(top_k), top_p, model.lm_head.out_features)
        _, seed = generation.check_length_and_seed(1, seed, [])
    except generation.InputError as error:
        raise InputError(str(error)) from None
    source_labels = None
    if task == "generation":
        ids, labels, notes = _gpt_sequence(text)
        p = check_position(position, len(ids))
        trace = trace_gpt(model, ids)
        decoder, label = model, lambda i: char_label(tokenizer.chars[i])
        next_token = ids[p + 1] if p + 1 < len(ids) else None
    else:
        source, ids, output, decoder, notes = _translation_sequence(text, direction)
        p = check_position(position, len(ids))
        trace = trace_decoder(model, source, ids)
        label = tokenizer.id_to_token
        labels = [label(i) for i in ids]
        source_labels = [label(i) for i in source]
        next_token = output[p] if p < len(output) else None
    logits = trace.logits[p]
    tempered = (logits / sampling.temperature).softmax(-1) if sampling.temperature > 0 else filter_logits(logits, 0)
    probs = filter_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.tensor([ids[: p + 1]])
    drawn = next(sample(decoder, prefix, 1, sampling.temperature, sampling.top_k, sampling.top_p, generator=generator))
    return Walkthrough(
        task,
        labels,
        p,
        trace,
        views.walkthrough_steps(trace),
        label,
        sampling.temperature,
        sampling.top_k,
        sampling.top_p,
        seed,
        tempered,
        probs,
        int(drawn[0]),
        next_token,
        source_labels,
        notes + sampling.notes,
    )


def check_step(step, count: int) -> int:
    """A step number 1..count (as shown) -> 0-based index, or InputError."""
    try:
        number = float(step)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 1 <= number <= count:
        raise InputError(f"Step {step!r} is out of range: this model's walkthrough has steps 1 to {count}.")
    return int(number) - 1


def render_step(walk: Walkthrough, step) -> tuple[str, str, object]:
    """(diagram HTML, step explanation in markdown, figure) for step number `step` (1-based)."""
    index = check_step(step, len(walk.steps))
    text, figure = step_view(walk, walk.steps[index])
    return views.diagram_html(walk.trace, walk.steps, index), text, figure


def summary_markdown(walk: Walkthrough) -> str:
    at = walk.labels[walk.position]
    if walk.next_token is None:
        nxt = "it is the last one, so what follows is the model's own guess"
    else:
        nxt = f"the text goes on with `{walk.label(walk.next_token)}`"
    lines = [
        f"Position **{walk.position}** (`{at}`) of {len(walk.labels)}: the model predicts the token after it "
        f"({nxt}). {walk.trace.n_layers} layers, d_model {walk.trace.embedded.size(-1)}."
    ]
    if walk.source_labels is not None:
        lines.append("Decoder input (the greedy translation): " + " ".join(f"`{t}`" for t in walk.labels))
    lines += [f"> Note: {n}" for n in walk.notes]
    return "\n\n".join(lines)


def outputs(task, text, direction, position, step, temperature, top_k, top_p, seed) -> tuple:
    """Everything the tab shows for one request (the /forward_pass endpoint)."""
    walk = forward_pass(task, text, position, temperature, top_k, top_p, seed, direction)
    return walk_outputs(walk, step)


def walk_outputs(walk: Walkthrough, step) -> tuple:
    """(diagram, step text, step figure, residual-stream figure, logit lens, summary) of one walkthrough."""
    diagram, explanation, figure = render_step(walk, step)
    target = walk.next_token
    p = walk.position
    lens = pd.DataFrame(
        views.lens_rows(walk.trace, p, walk.label, target), columns=views.lens_headers(target is not None)
    )
    stream = views.stream_figure(walk.trace, p, f"{p} ({walk.labels[p]})")
    return diagram, explanation, figure, stream, lens, summary_markdown(walk)


@shows_errors
def _on_run(task, text, direction, position, step, temperature, top_k, top_p, seed):
    result = outputs(task, text, direction, position, step, temperature, top_k, top_p, seed)
    return result


@shows_errors
def _on_move(delta, task, text, direction, position, step, temperature, top_k, top_p, seed):
    walk = forward_pass(task, text, position, temperature, top_k, top_p, seed, direction)
    step = min(max(check_step(step, len(walk.steps)) + 1 + delta, 1), len(walk.steps))
    return (step, *walk_outputs(walk, step))


@shows_errors
def _on_text(task, text, direction):
    """Keep the position slider within the new text; the last position is chosen."""
    task = model_task(task)
    try:
        count = len(_gpt_sequence(text)[0]) if task == "generation" else len(_translation_sequence(text, direction)[1])
    except InputError:
        return gr.Slider()
    return gr.Slider(maximum=max(count - 1, 1), value=count - 1)


@shows_errors
def _on_model(task):
    task = model_task(task)
    walk = forward_pass(task, EXAMPLES[task])
    is_translation = task == "translation"
    label = "Source sentence (the decoder walks through its translation)" if is_translation else "Prompt"
    return (
        gr.Textbox(value=EXAMPLES[task], label=label),
        gr.Dropdown(visible=is_translation),
        gr.Slider(maximum=max(len(walk.labels) - 1, 1), value=walk.position),
        gr.Slider(maximum=len(walk.steps), value=1),
    )


INTRO = """**The whole forward pass, one box at a time.** Pick a position: the diagram shows where you
are in the block, and each step shows the real numbers the model computed there (the first few
of its dimensions). The position's own prediction comes out at the end: the logits, the
temperature, the top-k/top-p cut and the token the sampler draws. Below: how much each sub-layer
writes into the **residual stream**, and the **logit lens**: what the model would predict if it
stopped after each layer."""

OPEN_LAB = """() => { const tab = [...document.querySelectorAll('button[role=tab]')]
  .find(b => b.textContent.trim() === 'Attention Lab'); if (tab) { tab.click(); window.scrollTo(0, 0); } }"""


def build() -> None:
    """The Forward Pass tab's layout and events (inside `with gr.Tab(TITLE)`)."""
    if not has_checkpoint("generation"):
        gr.Markdown("The walkthrough needs the generation model, which is not installed.")
        return
    gr.Markdown(INTRO)
    first = forward_pass("generation", EXAMPLES["generation"])
    tasks = [(MODELS[t], t) for t in MODELS if has_checkpoint(t)]
    with gr.Row():
        with gr.Column(scale=2):
            task = gr.Radio(tasks, value="generation", label="Model")
            text = gr.Textbox(value=EXAMPLES["generation"], lines=3, label="Prompt")
            direction = gr.Dropdown(list(DIRECTIONS), value=DIRECTIONS[0], label="Direction", visible=False)
            position = gr.Slider(
                0, len(first.labels) - 1, value=first.position, step=1, label="Position (0 = the first token)"
            )
            with gr.Accordion("Sampling (the last steps)", open=False):
                temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0 = the most likely)")
                top_k = gr.Number(value=0, precision=0, label="Top-k (0 = off)")
                top_p = gr.Slider(0.01, 1, value=1.0, step=0.01, label="Top-p (1 = off)")
                seed = gr.Number(value=0, precision=0, label="Seed")
            run = gr.Button("Walk through", variant="primary")
            summary = gr.Markdown(summary_markdown(first))
        with gr.Column(scale=1, min_width=280):
            diagram0, text0, figure0 = render_step(first, 1)
            diagram = gr.HTML(diagram0)
    with gr.Row():
        back = gr.Button("◀ Previous step", scale=1)
        step = gr.Slider(1, len(first.steps), value=1, step=1, label="Step", scale=4)
        forward = gr.Button("Next step ▶", scale=1)
    explanation = gr.Markdown(text0)
    figure = gr.Plot(figure0, label="This step")
    gr.Button("Open the Attention Lab: softmax(QKᵀ/√d_k)V in detail", size="sm").click(None, js=OPEN_LAB)
    with gr.Row():
        p = first.position
        stream = gr.Plot(views.stream_figure(first.trace, p, f"{p} ({first.labels[p]})"), label="Residual stream")
        lens = gr.Dataframe(
            views.lens_rows(first.trace, p, first.label, first.next_token),
            headers=views.lens_headers(first.next_token is not None),
            label="Logit lens: the residual stream read out through the final LayerNorm and the head",
        )
    inputs = [task, text, direction, position, step, temperature, top_k, top_p, seed]
    shown = [diagram, explanation, figure, stream, lens, summary]
    listen(
        [run.click, step.release, position.release, temperature.release, top_p.release, top_k.submit],
        _on_run,
        inputs,
        shown,
        api_name="forward_pass",
        trigger_mode="always_last",
        preprocess=False,  # API values reach our checks as sent (a position past the slider gets our message)
    )
    listen(back.click, functools.partial(_on_move, -1), inputs, [step, *shown])
    listen(forward.click, functools.partial(_on_move, 1), inputs, [step, *shown])
    listen(text.change, _on_text, [task, text, direction], position, trigger_mode="always_last")
    listen(direction.change, _on_text, [task, text, direction], position)
    listen(listen(task.change, _on_model, task, [text, direction, position, step]).then, _on_run, inputs, shown)
    explain.build(temperature, top_k, top_p, seed)
