"""Every generated character explained: generate with the Generate tab's settings, colour each
character by the probability the model gave it, and for any one of them show the distribution it
was drawn from (temperature and the top-k/top-p cut applied) and what its position attended to.

The probabilities are the sampler's own: `explain_generation` runs models.decoding.sample on a
decoder that only records the logits it hands to the sampler, then applies the same
models.decoding.filter_logits the sampler applied to them. Same prompt, settings and seed give
the same text as the Generate tab.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import gradio as gr
import plotly.graph_objects as go
import torch
from torch import Tensor

from demos import forward_views as views
from demos import generation
from demos.common import UserError, get_model, listen, shows_errors, warn
from demos.plots import char_label
from models.attention import DecoderCache
from models.decoding import filter_logits, sample

MAX_EXPLAINED = 300  # new characters: each click regenerates nothing, but a request holds a core


class InputError(UserError):
    """A request the person can fix; the message says how."""


class RecordingDecoder:
    """A models.decoding Decoder around the GPT that keeps the last-position logits of every call,
    i.e. exactly the logits `sample` turns into the distribution it draws from."""

    def __init__(self, model) -> None:
        self.model = model
        self.context_len = model.context_len
        self.rolling_cache = model.rolling_cache
        self.receptive_field = getattr(model, "receptive_field", model.context_len)
        self.logits: list[Tensor] = []

    def new_cache(self) -> DecoderCache:
        return self.model.new_cache()

    def step(self, tokens: Tensor, cache: DecoderCache | None, **position) -> Tensor:
        logits = self.model.step(tokens, cache, **position)
        self.logits.append(logits[:, -1])
        return logits


@dataclass
class Explanation:
    """A generation with, per new character, the distribution it was drawn from."""

    prompt_ids: list[int]
    ids: list[int]  # the generated tokens
    chars: list[str]
    logits: Tensor  # (new, vocab) the logits the sampler used at each step
    probs: Tensor  # (new, vocab) filter_logits(logits): what each character was drawn from
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> list[float]:
        """The probability of each character that was picked."""
        return self.probs[torch.arange(len(self.ids)), torch.tensor(self.ids)].tolist()


def zero_is_off(value):
    """The tab's top-k box: 0 (or empty) means no top-k filter."""
    try:
        return None if value is None or value == "" or float(value) == 0 else value
    except (TypeError, ValueError):
        return value


def explain_generation(prompt: str, max_new_tokens=200, temperature=0.8, top_k=None, top_p=None, seed=0) -> Explanation:
    """Generate as the Generate tab does and keep each step's distribution (InputError for bad values)."""
    _, tokenizer = get_model(generation.TASK)
    notes: list[str] = []
    try:
        sampling = generation.check_sampling(temperature, zero_is_off(top_k), top_p, tokenizer.vocab_size)
        n_new, seed = generation.check_length_and_seed(max_new_tokens, seed, notes)
    except generation.InputError as error:
        raise InputError(str(error)) from None
    if n_new > MAX_EXPLAINED:
        notes.append(f"{n_new} new characters asked; explained generation stops at {MAX_EXPLAINED}.")
        n_new = MAX_EXPLAINED
    result = _explained(
        "" if prompt is None else str(prompt), n_new, sampling.temperature, sampling.top_k, sampling.top_p, seed
    )
    return dataclasses.replace(result, notes=result.notes + sampling.notes + notes)  # the cached one stays as is


@functools.lru_cache(maxsize=8)  # clicking characters asks again for the same generation
@torch.inference_mode()
def _explained(prompt: str, n_new: int, temperature: float, top_k, top_p, seed: int) -> Explanation:
    model, tokenizer = get_model(generation.TASK)
    prepared = generation.prepare_prompt(prompt, tokenizer, model.context_len)
    recorder = RecordingDecoder(model)
    generator = torch.Generator().manual_seed(seed)
    steps = sample(recorder, torch.tensor([prepared.ids]), n_new, temperature, top_k, top_p, generator=generator)
    ids = [int(token) for token in steps]
    logits = torch.cat(recorder.logits).float()
    probs = filter_logits(logits, temperature, top_k, top_p)  # the sampler's own call on the same logits
    chars = [tokenizer.chars[i] for i in ids]
    return Explanation(prepared.ids, ids, chars, logits, probs, temperature, top_k, top_p, seed, list(prepared.notes))


def highlighted(explanation: Explanation) -> list[tuple[str, float]]:
    """(character, probability it had) pairs for gr.HighlightedText."""
    return [(c, round(p, 4)) for c, p in zip(explanation.chars, explanation.chosen, strict=True)]


def check_index(index, count: int) -> int:
    try:
        number = float(index)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 0 <= number < count:
        raise InputError(f"Character {index!r} is out of range: {count} were generated, numbered 0 to {count - 1}.")
    return int(number)


@torch.inference_mode()
def character_attention(explanation: Explanation, index: int) -> tuple[Tensor, list[str]]:
    """(layers, heads, keys) attention of the position that produced character `index` over the
    keys it could see (the last context_len tokens), and those tokens' labels.

    Past the context a RoPE GPT attends through a sliding window in every layer, so the whole text
    goes through the model (as the sampler's cache saw it); other models see the last context_len."""
    model, tokenizer = get_model(generation.TASK)
    text = explanation.prompt_ids + explanation.ids[:index]
    seen = text if model.rolling_cache else text[-model.context_len :]
    out = model(torch.tensor([seen]), need_weights=True)
    keys = min(len(seen), model.context_len)
    weights = torch.stack([layer["self"][0, :, -1, -keys:] for layer in out.attentions])
    return weights, [char_label(tokenizer.chars[i]) for i in seen[-keys:]]


@dataclass
class CharacterView:
    markdown: str
    distribution: go.Figure
    attention: go.Figure
    probs: Tensor  # the distribution shown (what the character was drawn from)


def explain_character(explanation: Explanation, index) -> CharacterView:
    _, tokenizer = get_model(generation.TASK)
    i = check_index(index, len(explanation.ids))
    chosen, probs = explanation.ids[i], explanation.probs[i]
    logits = explanation.logits[i]
    plain = logits.softmax(-1)
    tempered = (logits / explanation.temperature).softmax(-1) if explanation.temperature > 0 else probs

    def label(t: int) -> str:
        return char_label(tokenizer.chars[t])

    order = tempered.topk(min(views.TOP_N, tempered.numel())).indices.tolist()
    if chosen not in order:
        order.append(chosen)
    series = [("T = 1", plain), (f"T = {explanation.temperature:g}", tempered), ("after the cut: drawn from", probs)]
    title = f"Character {i} ({label(chosen)}): what it was drawn from"
    distribution = views.probability_figure(series, label, title, highlight=chosen, order=order)
    weights, keys = character_attention(explanation, i)
    mean = weights.mean(1).numpy()  # heads averaged, per layer
    attention = go.Figure(
        go.Heatmap(
            z=mean,
            x=[f"{k}:{c}" for k, c in enumerate(keys)],
            y=[f"layer {n + 1}" for n in range(mean.shape[0])],
            colorscale="Blues",
            zmin=0,
            hovertemplate="%{y}, key %{x}: %{z:.3f}<extra>heads averaged</extra>",
        )
    )
    attention.update_layout(
        title="What the position before it attended to (heads averaged)",
        xaxis={"type": "category", "tickangle": -60},
        yaxis={"autorange": "reversed"},
        height=300,
        margin={"l": 60, "r": 10, "t": 50, "b": 60},
    )
    rank = int((probs > probs[chosen]).sum()) + 1
    kept = int((probs > 0).sum())
    markdown = (
        f"**Character {i}: `{label(chosen)}`**, drawn with probability **{float(probs[chosen]):.1%}** (rank {rank} of "
        f"the {kept} characters left after temperature {explanation.temperature:g}, top-k "
        f"{explanation.top_k or 'off'}, top-p {explanation.top_p or 'off'}; {float(plain[chosen]):.1%} at T = 1)."
    )
    return CharacterView(markdown, distribution, attention, probs)


# ----------------------------------------------------------------------------------------------
# The section under the walkthrough
# ----------------------------------------------------------------------------------------------


def summary(explanation: Explanation) -> str:
    chosen = explanation.chosen
    low = sorted(range(len(chosen)), key=chosen.__getitem__)[:3]
    surprising = ", ".join(f"{i} (`{char_label(explanation.chars[i])}`, {chosen[i]:.1%})" for i in low)
    lines = [
        f"{len(chosen)} characters; mean probability of the picked character {sum(chosen) / max(len(chosen), 1):.1%}. "
        f"Least expected: {surprising}. Click a character to see what it was drawn from."
    ]
    return "\n\n".join(lines + [f"> Note: {n}" for n in explanation.notes])


@shows_errors
def _on_explain(prompt, max_new, temperature, top_k, top_p, seed):
    explanation = explain_generation(prompt, max_new, temperature, top_k, top_p, seed)
    warn(explanation.notes)
    first = explain_character(explanation, 0)
    return highlighted(explanation), summary(explanation), 0, first.markdown, first.distribution, first.attention


@shows_errors
def _on_character(prompt, max_new, temperature, top_k, top_p, seed, index):
    explanation = explain_generation(prompt, max_new, temperature, top_k, top_p, seed)
    view = explain_character(explanation, index)
    return view.markdown, view.distribution, view.attention


def _on_select(event: gr.SelectData) -> int:
    return event.index


def build(temperature, top_k, top_p, seed) -> None:
    """The section's layout; the sampling controls are the walkthrough's."""
    gr.Markdown(
        "## Every generated character, explained\nThe colour is the probability the model gave the character "
        "it picked (the sampling settings above apply). Click a character."
    )
    with gr.Row():
        prompt = gr.Textbox(value="ROMEO:\n", lines=2, label="Prompt to continue", scale=3)
        max_new = gr.Slider(1, MAX_EXPLAINED, value=120, step=1, label="New characters", scale=2)
    run = gr.Button("Generate and explain", variant="primary")
    text = gr.HighlightedText(
        label="Generated text (the redder, the more probable the picked character was)", show_legend=False
    )
    about = gr.Markdown()
    index = gr.Number(value=0, precision=0, label="Character (0 = the first generated)")
    detail = gr.Markdown()
    with gr.Row():
        distribution = gr.Plot(label="What it was drawn from")
        attention = gr.Plot(label="Attention of its position")
    settings = [prompt, max_new, temperature, top_k, top_p, seed]
    views_out = [detail, distribution, attention]
    listen(
        run.click,
        _on_explain,
        settings,
        [text, about, index, *views_out],
        api_name="explain_generation",
        preprocess=False,
    )
    listen(text.select, _on_select, None, index)
    listen(index.change, _on_character, [*settings, index], views_out, api_name="explain_character", preprocess=False)
