"""The Generate tab: a character-level GPT trained on Tiny Shakespeare continues a prompt, one
character (token) at a time, and shows how it picks the next one.

Plain functions (tests call them): `generate` streams `Update`s, `next_token_distribution` gives
the top-10 next characters. `build()` lays out the tab and wires them to Gradio events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import gradio as gr
import plotly.graph_objects as go
import torch

from demos.common import (
    AttentionView,
    MissingCheckpoint,
    UserError,
    get_model,
    has_checkpoint,
    listen,
    missing_message,
)
from demos.plots import char_label
from demos.tools import examples_that_run
from models.decoding import filter_logits, sample
from models.fast_decoding import FastDecoder
from models.tokenizers import CharTokenizer

TITLE = "Generate"
TASK = "generation"
MAX_NEW_TOKENS = 1000  # a request holds one of two CPU cores while it runs
MAX_TEMPERATURE = 5.0
MAX_SEED = 2**32 - 1
TOP_N = 10  # bars in the next-character chart
UI_INTERVAL_S = 0.03  # stream to the browser at most ~30 times a second; the model runs faster

EXAMPLES = [
    ["ROMEO:\nBut soft, what light", 300, 0.8, 65, 1.0, 0],
    ["First Citizen:\nBefore we proceed any further, hear me speak.\n\n", 400, 0.8, 20, 0.95, 1],
    ["KING RICHARD III:\nNow is the winter of our discontent\n", 300, 0.6, 65, 0.9, 2],
    ["To be, or not to be", 200, 0.0, 65, 1.0, 0],
    ["JULIET:\n", 500, 1.2, 65, 1.0, 7],
]


class InputError(UserError):
    """A value a person (or API client) got wrong; the message says what to change."""


# ----------------------------------------------------------------------------------------------
# Checking what users send
# ----------------------------------------------------------------------------------------------


def _number(value, what: str) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise InputError(f"{what} must be a number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}.") from None
    if math.isnan(number):
        raise InputError(f"{what} must be a number, got NaN.")
    return number


def _clamp(value: float, low: float, high: float, what: str, notes: list[str]) -> float:
    if value < low or value > high:
        clamped = min(max(value, low), high)
        notes.append(f"{what} {value:g} is outside {low:g}..{high:g}, so {clamped:g} is used.")
        return clamped
    return value


@dataclass
class Sampling:
    """Checked sampling knobs (None = that filter is off) and notes on what was changed."""

    temperature: float
    top_k: int | None
    top_p: float | None
    notes: list[str] = field(default_factory=list)


def check_sampling(temperature, top_k, top_p, vocab_size: int) -> Sampling:
    """Turn slider/API values into valid sampling settings: numbers or InputError, ranges clamped."""
    notes: list[str] = []
    t = _clamp(_number(temperature, "Temperature"), 0.0, MAX_TEMPERATURE, "Temperature", notes)
    k = None
    if top_k is not None and top_k != "":
        k = round(_number(top_k, "Top-k"))
        if k < 1:
            notes.append(f"Top-k {k} is below 1, so top-k filtering is off (all {vocab_size} characters).")
            k = None
        elif k > vocab_size:
            notes.append(f"Top-k {k} is more than the {vocab_size} characters the model knows: all are kept.")
            k = None
        elif k == vocab_size:
            k = None
    p = None
    if top_p is not None and top_p != "":
        p = _clamp(_number(top_p, "Top-p"), 0.01, 1.0, "Top-p", notes)
        p = None if p >= 1.0 else p
    return Sampling(t, k, p, notes)


def check_length_and_seed(max_new_tokens, seed, notes: list[str]) -> tuple[int, int]:
    n = _clamp(_number(max_new_tokens, "Max new tokens"), 1, MAX_NEW_TOKENS, "Max new tokens", notes)
    n = round(n)
    message = f"The seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}."
    try:
        s = _number(0 if seed is None or seed == "" else seed, "The seed")
    except InputError:
        raise InputError(message) from None
    if not s.is_integer() or not 0 <= s <= MAX_SEED:
        raise InputError(message)
    return n, int(s)


def _flag(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) or str(value).lower() in ("true", "false", "0", "1"):
        return str(value).lower() in ("true", "1")
    raise InputError(f"{what} must be true or false, got {value!r}.")


@dataclass
class Prompt:
    """The prompt as the model will see it: token ids, their text, and what was changed."""

    ids: list[int]
    text: str
    notes: list[str]


def prepare_prompt(prompt: str | None, tokenizer: CharTokenizer, context_len: int) -> Prompt:
    """Drop unknown characters, start from a newline if nothing is left, keep the last
    `context_len` characters; every change gets a note a person can read."""
    prompt = "" if prompt is None else str(prompt)
    notes = []
    unknown = tokenizer.unknown(prompt)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        notes.append(f"Left out {len(unknown)} character(s) the model never saw in Shakespeare: {shown}.")
    ids = tokenizer.encode(prompt)
    if not ids:
        ids = tokenizer.encode("\n")
        notes.append("The prompt is empty, so the model starts from a new line.")
    if len(ids) > context_len:
        notes.append(
            f"The prompt has {len(ids)} characters but the model sees at most {context_len}: "
            f"it continues from the last {context_len}."
        )
        ids = ids[-context_len:]
    return Prompt(ids, tokenizer.decode(ids), notes)


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------


@dataclass
class Update:
    """One step of a streamed generation."""

    prompt: str  # the prompt the model used (after `prepare_prompt`)
    text: str  # the characters generated so far
    tokens: int
    tokens_per_s: float
    first_token_ms: float
    done: bool
    use_cache: bool
    notes: list[str]


def generate(
    prompt: str,
    max_new_tokens: int = 300,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    use_cache: bool = True,
) -> Iterator[Update]:
    """Continue `prompt` character by character, yielding an Update after each new one.

    tokens_per_s counts from the call (prompt processing included), as a user waits.
    Raises InputError for values that cannot be used, MissingCheckpoint without a model.
    """
    model, tokenizer = get_model(TASK)
    notes: list[str] = []
    sampling = check_sampling(temperature, top_k, top_p, tokenizer.vocab_size)
    n_new, seed = check_length_and_seed(max_new_tokens, seed, notes)
    use_cache = _flag(use_cache, "The KV-cache switch")
    prepared = prepare_prompt(prompt, tokenizer, model.context_len)
    notes = prepared.notes + sampling.notes + notes
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    first_token_ms = 0.0
    chars: list[str] = []
    steps = sample(
        FastDecoder(model),
        torch.tensor([prepared.ids]),
        n_new,
        sampling.temperature,
        sampling.top_k,
        sampling.top_p,
        use_cache=use_cache,
        generator=generator,
    )
    for token in steps:
        chars.append(tokenizer.chars[int(token)])
        elapsed = time.perf_counter() - start
        if len(chars) == 1:
            first_token_ms = 1000 * elapsed
        yield Update(
            prompt=prepared.text,
            text="".join(chars),
            tokens=len(chars),
            tokens_per_s=len(chars) / elapsed,
            first_token_ms=first_token_ms,
            done=len(chars) == n_new,
            use_cache=use_cache,
            notes=notes,
        )


@torch.inference_mode()
def next_token_distribution(
    prompt: str, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> list[tuple[str, float]]:
    """The TOP_N most likely next characters after `prompt` with their probabilities, after
    temperature, top-k and top-p (what sampling would actually draw from); most likely first."""
    model, tokenizer = get_model(TASK)
    sampling = check_sampling(temperature, top_k, top_p, tokenizer.vocab_size)
    prepared = prepare_prompt(prompt, tokenizer, model.context_len)
    logits = model(torch.tensor([prepared.ids])).logits[0, -1]
    probs = filter_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    top = probs.topk(min(TOP_N, probs.numel()))
    return [(tokenizer.chars[int(i)], float(p)) for p, i in zip(top.values, top.indices, strict=True)]


MAX_ATTENTION_CHARS = 128  # a longer character heatmap is unreadable (and its model view slow)


def attention_of(text: str) -> AttentionView:
    """The Attention Maps tab's view of a prompt: the GPT's causal self-attention over the prompt
    as generate() prepares it (unknown characters left out, at most MAX_ATTENTION_CHARS)."""
    model, tokenizer = get_model(TASK)
    prompt = prepare_prompt(text, tokenizer, min(MAX_ATTENTION_CHARS, model.config.context_len))
    labels = [char_label(c) for c in prompt.text]
    with torch.inference_mode():
        run = model.attention(torch.tensor([prompt.ids]), labels)
    return AttentionView(run.maps, prompt.notes)


def show_char(c: str) -> str:
    """Make whitespace visible on a chart axis."""
    return {"\n": "⏎ newline", " ": "␣ space"}.get(c, c)


def distribution_figure(pairs: list[tuple[str, float]]) -> go.Figure:
    """Horizontal bars, the most likely character on top."""
    labels = [show_char(c) for c, _ in pairs]
    probs = [p for _, p in pairs]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=labels,
            orientation="h",
            text=[f"{p:.1%}" for p in probs],
            textposition="auto",
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    fig.update_layout(
        title="What the model would draw next",
        xaxis={"title": "probability", "range": [0, 1], "tickformat": ".0%"},
        yaxis={"autorange": "reversed", "type": "category"},
        height=360,
        margin={"l": 90, "r": 20, "t": 50, "b": 40},
    )
    return fig


# ----------------------------------------------------------------------------------------------
# The tab
# ----------------------------------------------------------------------------------------------


def stats_markdown(update: Update) -> str:
    cache = "on" if update.use_cache else "off"
    lines = [
        f"**{update.tokens}** characters · **{update.tokens_per_s:.0f} tokens/s** (1 token = 1 character) · "
        f"first token after **{update.first_token_ms:.0f} ms** · KV cache **{cache}**"
    ]
    lines += [f"> Note: {note}" for note in update.notes]
    return "\n\n".join(lines)


def _stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache):
    """Gradio handler: stream text and stats; user mistakes become messages, not tracebacks."""
    try:
        last_shown = 0.0
        for update in generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache):
            if update.tokens == 1:
                for note in update.notes:
                    gr.Warning(note)
            now = time.perf_counter()
            if update.done or now - last_shown >= UI_INTERVAL_S:
                last_shown = now
                yield update.prompt + update.text, stats_markdown(update)
    except (InputError, MissingCheckpoint) as error:
        raise gr.Error(str(error)) from None


def _distribution_plot(prompt, temperature, top_k, top_p) -> go.Figure:
    try:
        pairs = next_token_distribution(prompt, temperature, top_k, top_p)
    except (InputError, MissingCheckpoint) as error:
        raise gr.Error(str(error)) from None
    return distribution_figure(pairs)


INTRO = """A small GPT that read Tiny Shakespeare one **character** at a time writes on from your prompt.
Each new character is drawn from the model's probabilities: **temperature** sharpens (low) or
flattens (high) them, **top-k** keeps the k most likely characters, **top-p** the smallest set
holding that much probability. The **KV cache** keeps every layer's keys and values, so each new
character costs one position instead of the whole context: switch it off to see the difference.
Past its 128-character context, every layer attends only to the latest 128 positions (a sliding
window), so the text can run on, and it is the same text, character for character, with the cache on or off."""


def build() -> None:
    """The Generate tab's layout and events (inside `with gr.Tab(TITLE)`)."""
    if not has_checkpoint(TASK):
        gr.Markdown(missing_message(TASK))
        return
    model, tokenizer = get_model(TASK)
    vocab = tokenizer.vocab_size
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0][0], lines=4)
            with gr.Row():
                run = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            output = gr.Textbox(label="Prompt + generated text", lines=14, interactive=False)
            stats = gr.Markdown()
        with gr.Column(scale=2):
            max_new = gr.Slider(1, MAX_NEW_TOKENS, value=300, step=1, label="Max new tokens (characters)")
            temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0 = always the most likely)")
            top_k = gr.Slider(1, vocab, value=vocab, step=1, label=f"Top-k ({vocab} = off)")
            top_p = gr.Slider(0.01, 1, value=1.0, step=0.01, label="Top-p (1 = off)")
            seed = gr.Number(value=0, precision=0, label="Seed (same seed, same text)")
            use_cache = gr.Checkbox(value=True, label="KV cache")
            plot = gr.Plot(
                value=distribution_figure(next_token_distribution(EXAMPLES[0][0], 0.8)),
                label=f"Top {TOP_N} next characters after the prompt",
            )
    examples = [[text, n, t, min(k, vocab), p, s] for text, n, t, k, p, s in EXAMPLES]
    example_set = gr.Examples(examples, inputs=[prompt, max_new, temperature, top_k, top_p, seed])
    inputs = [prompt, max_new, temperature, top_k, top_p, seed, use_cache]
    # preprocess=False: API values reach our checks as sent, so out-of-range ones get our clamps
    # and messages instead of Gradio's bounds error
    event = listen(run.click, _stream, inputs, [output, stats], api_name="generate", preprocess=False)
    # an example generates at once, from its own seed: the same text every time
    examples_that_run(example_set, _stream, inputs, [output, stats], preprocess=False)
    stop.click(None, cancels=[event])
    listen(
        [prompt.change, temperature.change, top_k.change, top_p.change],
        _distribution_plot,
        [prompt, temperature, top_k, top_p],
        plot,
        api_name="next_token",
        trigger_mode="always_last",
        show_progress="hidden",
        preprocess=False,
    )
