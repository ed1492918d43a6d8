"""The Fill-Mask tab: a small BERT fills each [MASK] of a sentence, and the three families of
Transformer (encoder-only, decoder-only, encoder-decoder) read the same sentence side by side.

`fill_mask(text, top_k)` is the plain function behind `/fill_mask`; `compare_families(text)` is
behind `/compare_families`; `attention_of(text)` feeds the Attention Maps tab (demos/registry.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import gradio as gr
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from demos import registry
from demos.common import (
    AttentionView,
    MissingCheckpoint,
    UserError,
    get_model,
    has_checkpoint,
    listen,
    missing_message,
    shows_errors,
    warn,
    worked_example,
)
from demos.plots import attention_heatmap
from demos.tools import examples_that_run
from models.bert import MASK_ID, SPECIAL_TOKENS, UNK_ID
from models.bert import fill_mask as predict_blanks

TITLE = "Fill-Mask"
TASK = "mlm"
MAX_TOP_K = 20
EXAMPLES = [
    ["A man is [MASK] a bike.", 5],
    ["Two [MASK] are playing in the snow.", 5],
    ["A woman in a red [MASK] is sitting on a [MASK].", 5],
    ["A little girl is climbing into a wooden [MASK].", 5],
]
# "[mask]", "[ MASK ]", "<mask>": what people type for the blank, read as the one mask token
MASK_PATTERN = re.compile(r"\[\s*mask\s*\]|<\s*mask\s*>", re.IGNORECASE)


class InputError(UserError):
    """A sentence the model cannot fill; the message says how to fix it."""


@dataclass
class Filled:
    """What the tab shows: the sentence with the best guesses, and each blank's candidates."""

    text: str  # the sentence with every [MASK] replaced by its most likely piece
    blanks: list[list[tuple[str, float]]]  # per blank, (piece, probability), most likely first
    tokens: list[str]  # the pieces the model read, [CLS] and [SEP] included
    notes: list[str] = field(default_factory=list)


def read_masked(text, tokenizer, max_len: int) -> tuple[str, list[str]]:
    """The sentence with its blanks written as [MASK], and notes; InputError when it cannot be filled."""
    text = "" if text is None else str(text)
    text = MASK_PATTERN.sub("[MASK]", text).strip()
    example = "for example 'A man is [MASK] a bike.'"
    if not text:
        raise InputError(f"There is no sentence: type one with [MASK] where a word is missing, {example}")
    ids = tokenizer.encode(text).ids
    n_masks = ids.count(MASK_ID)
    if n_masks == 0:
        raise InputError(f"There is no blank to fill: write [MASK] where a word should go, {example}")
    words = [i for i in ids if i >= len(SPECIAL_TOKENS) or i == UNK_ID]
    if not words:
        raise InputError(
            f"With nothing but [MASK] there is nothing to guess from: add words around the blank, {example}"
        )
    if len(ids) > max_len:
        raise InputError(
            f"The sentence is {len(ids) - 2} word pieces long, but this model reads at most {max_len - 2} "
            "(it learned from one-line captions): shorten it."
        )
    notes = []
    if UNK_ID in ids:
        notes.append("Some characters are unknown to the model (it learned English captions); it reads them as [UNK].")
    if n_masks > len(words):
        notes.append(
            f"{n_masks} blanks and only {len(words)} known pieces: each blank is guessed on its own, "
            "so with this little context the guesses are rough."
        )
    return text, notes


def top_k_value(value) -> int:
    """The number of candidates per blank, a whole number in 1..MAX_TOP_K, or InputError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 1 <= number <= MAX_TOP_K:
        raise InputError(f"The number of candidates must be a whole number from 1 to {MAX_TOP_K}, not {value!r}.")
    return int(number)


def fill_mask(text: str, top_k: int = 5) -> Filled:
    """Fill every [MASK] of `text` with the model's top_k candidates (probabilities), all at once."""
    model, tokenizer = get_model(TASK)
    k = top_k_value(top_k)
    text, notes = read_masked(text, tokenizer, model.config.max_len)
    with torch.inference_mode():
        result = predict_blanks(model, tokenizer, text, k)
    blanks = [blank.candidates for blank in result.blanks]
    return Filled(result.filled, blanks, result.tokens, notes)


def attention_of(text: str) -> AttentionView:
    """The Attention Maps tab's view of a sentence with [MASK]s: BERT's bidirectional self-attention."""
    model, tokenizer = get_model(TASK)
    text, notes = read_masked(text, tokenizer, model.config.max_len)
    encoding = tokenizer.encode(text)
    with torch.inference_mode():
        run = model.attention(torch.tensor([encoding.ids]), list(encoding.tokens))
    return AttentionView(run.maps, notes)


# ----------------------------------------------------------------------------------------------
# The three families side by side
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    task: str  # the model in demos/registry.py
    kind: str  # which of its attentions
    title: str
    sees: str  # who can see whom
    learns: str  # what it is trained to predict
    used_for: str


FAMILIES = (
    Family(
        TASK,
        "encoder self",
        "Encoder-only (BERT): bidirectional self-attention",
        "Every token sees every other token, to its left and to its right; only padding is hidden.",
        "It is trained to predict the 15% of tokens that were hidden ([MASK]) or swapped, from both sides.",
        "Understanding a text whole: filling blanks, classifying sentences, finding answers, embeddings.",
    ),
    Family(
        "generation",
        "causal self",
        "Decoder-only (GPT): causal self-attention",
        "Each token sees itself and the tokens before it, never the ones after (the upper triangle is empty).",
        "It is trained to predict the next token (here the next character of Shakespeare) at every position.",
        "Generating text one token at a time, each new token fed back in.",
    ),
    Family(
        "translation",
        "encoder self",
        "Encoder-decoder (translator): encoder self-attention",
        "The encoder reads the whole source sentence both ways, like BERT.",
        "It learns only through the decoder's loss: a source representation that helps predict the target.",
        "Turning one sequence into another: translation, summarisation, speech to text.",
    ),
    Family(
        "translation",
        "decoder self",
        "Encoder-decoder: decoder (masked) self-attention",
        "Each target piece sees the target pieces written before it, like GPT.",
        "It is trained to predict the next target piece, given the whole source (teacher forcing).",
        "Writing the output one piece at a time.",
    ),
    Family(
        "translation",
        "cross",
        "Encoder-decoder: cross-attention",
        "Each target piece (rows) looks at every source piece (columns): queries from the decoder, keys and "
        "values from the encoder.",
        "Trained by the same next-piece loss: it learns where in the source the next word comes from.",
        "The bridge between the two halves, an alignment of output to input.",
    ),
)


def family_note(family: Family) -> str:
    return (
        f"**{family.title}.** Who sees whom: {family.sees} What it predicts: {family.learns} "
        f"Used for: {family.used_for}"
    )


def filled_for_others(text: str) -> str:
    """The GPT and the translator have no [MASK]: they read the sentence with BERT's best guesses
    (or with the blanks dropped when the fill-mask model is missing)."""
    try:
        return fill_mask(text, 1).text
    except MissingCheckpoint:
        return " ".join(MASK_PATTERN.sub("", str(text or "")).split())


def message_figure(message: str) -> go.Figure:
    """An empty plot that says why there is no map (a model whose checkpoint is missing)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=160, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def compare_families(text: str) -> list[go.Figure]:
    """One heatmap (average over layers and heads) per entry of FAMILIES; a model whose checkpoint
    is missing gets a figure that says so, and the others still show."""
    others = filled_for_others(text)
    views: dict[str, AttentionView | str] = {}
    outputs: list[go.Figure] = []
    for family in FAMILIES:
        if family.task not in views:
            module = registry.model(family.task).module()
            try:
                source = text if family.task == TASK else others
                views[family.task] = module.attention_of(source)
            except MissingCheckpoint:
                views[family.task] = missing_message(family.task)
        view = views[family.task]
        if isinstance(view, str):
            outputs.append(message_figure(view))
            continue
        attention = view.maps[family.kind]
        outputs.append(
            attention_heatmap(
                attention.select().numpy(),
                attention.query_labels,
                attention.key_labels,
                title=f"{family.title} (average of {attention.layers} layers × {attention.heads} heads)",
            )
        )
    return outputs


# ----------------------------------------------------------------------------------------------
# The UI
# ----------------------------------------------------------------------------------------------


def candidates_figure(filled: Filled) -> go.Figure:
    """One bar chart per blank, the most likely piece on top."""
    n = len(filled.blanks)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"blank {i + 1}" for i in range(n)], horizontal_spacing=0.12)
    for i, candidates in enumerate(filled.blanks):
        pieces = [piece for piece, _ in candidates]
        probs = [p for _, p in candidates]
        fig.add_trace(
            go.Bar(
                x=probs,
                y=pieces,
                orientation="h",
                text=[f"{p:.1%}" for p in probs],
                textposition="auto",
                hovertemplate="%{y}: %{x:.2%}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=i + 1)
        fig.update_xaxes(range=[0, 1], tickformat=".0%", row=1, col=i + 1)
    fig.update_layout(height=120 + 28 * max(len(c) for c in filled.blanks), margin={"l": 90, "r": 20, "t": 50, "b": 30})
    return fig


def as_json(filled: Filled) -> dict:
    return {
        "filled": filled.text,
        "blanks": [[{"token": piece, "probability": p} for piece, p in candidates] for candidates in filled.blanks],
        "tokens": filled.tokens,
    }


@shows_errors
def _on_fill(text, top_k):
    filled = fill_mask(text, top_k)
    warn(filled.notes)
    return filled.text, as_json(filled), candidates_figure(filled)


@shows_errors
def _on_compare(text):
    return compare_families(text)


def build() -> None:
    if not has_checkpoint(TASK):
        gr.Markdown(missing_message(TASK))
        return
    gr.Markdown(
        "A small BERT, trained from scratch on the English Multi30k image captions, fills in blanks. "
        "Write **[MASK]** where a word is missing (one or several): the model reads the whole sentence, "
        "left and right of each blank, and shows its most likely word pieces. It knows short descriptions "
        "of everyday scenes, nothing else."
    )
    # the tab opens with its first example filled in and compared across the families
    example, example_k = EXAMPLES[0]
    first = worked_example(fill_mask, example, example_k)
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Sentence with [MASK]", lines=2, max_length=2000, value=example)
            top_k = gr.Slider(1, MAX_TOP_K, value=example_k, step=1, label="Candidates per blank")
            go_button = gr.Button("Fill in", variant="primary")
        with gr.Column():
            filled = gr.Textbox(first.text if first else None, label="Most likely sentence", interactive=False)
            details = gr.JSON(as_json(first) if first else None, label="Candidates", visible=False)
    example_set = gr.Examples(EXAMPLES, inputs=[text, top_k])
    plot = gr.Plot(candidates_figure(first) if first else None, label="Candidates for each blank")
    listen(go_button.click, _on_fill, [text, top_k], [filled, details, plot], api_name="fill_mask")
    examples_that_run(example_set, _on_fill, [text, top_k], [filled, details, plot])
    listen(text.submit, _on_fill, [text, top_k], [filled, details, plot])

    gr.Markdown(
        "### Three families, one sentence\n"
        "The same sentence read by the three kinds of Transformer in this app. BERT reads it with its blanks; "
        "the GPT and the translator read it with BERT's best guesses filled in (the GPT reads characters, "
        "the translator translates it into German). Each map averages all layers and heads: a row is a "
        "query, a column a key, a dark cell a strong weight."
    )
    compare = gr.Button("Compare the three families")
    maps = worked_example(compare_families, example, fallback=[None] * len(FAMILIES))
    plots = []
    for family, figure in zip(FAMILIES, maps, strict=True):
        gr.Markdown(family_note(family))
        # the note above names the family; a label would sit over the start of the map's title
        plots.append(gr.Plot(figure, label=family.title, show_label=False))
    listen(compare.click, _on_compare, [text], plots, api_name="compare_families")
