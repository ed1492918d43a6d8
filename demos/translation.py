"""The Translate tab: English <-> German and English <-> French with one encoder-decoder, and the
cross-attention map that shows which source tokens each target token looked at."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import torch

from demos.common import (
    CORES,
    AttentionView,
    UserError,
    get_model,
    has_checkpoint,
    listen,
    missing_message,
    parse_selector,
    selector_choices,
    shows_errors,
    worked_example,
)
from demos.plots import attention_heatmap
from demos.tools import examples_that_run
from models.confidence import Verdict, caption_verdict
from models.translation import EOS_ID, LANGUAGES, encode_source, language_id, max_output_len, translate_ids

TITLE = "Translate"
TASK = "translation"
PIVOT = "en"  # the model learned only to and from English; de <-> fr goes through it
MAX_BEAM = 8
LONG_WORD = 25  # characters; Multi30k's longest ordinary words are shorter
EXAMPLES = [
    ["A man in a blue shirt is playing a guitar on the street.", "English", "German", 4],
    ["Zwei Hunde spielen im Schnee.", "German", "English", 4],
    ["Two children are running along the beach.", "English", "French", 4],
    ["Une femme lit un livre dans un parc.", "French", "English", 4],
]


class InputError(UserError):
    """A request the user can fix; the message says how."""


@dataclass
class Translation:
    text: str
    source_tokens: list[str]  # subword pieces the encoder read, ending with </s>
    target_tokens: list[str]  # pieces produced, ending with </s> (one per decoder step)
    cross_attention: np.ndarray  # (layers, heads, len(target_tokens), len(source_tokens))
    notes: list[str] = field(default_factory=list)  # warnings for the user
    finished: bool = True  # False: the decoder stopped at its length limit, not at </s>
    attention: dict = field(default_factory=dict)  # kind -> models.attention_data.Attention
    verdict: Verdict | None = None  # whether the text looks like the captions the model learned from


def language_code(value: str) -> str:
    """'German' or 'de' -> 'de'."""
    for code, name in LANGUAGES.items():
        if value in (code, name):
            return code
    raise InputError(f"{value} is not in the list of choices for a language: {', '.join(LANGUAGES.values())}.")


def translate(text: str, source: str = "en", target: str = "de", beam_size: int = 4) -> Translation:
    """Translate `text` from `source` to `target` (codes or names) with beam search.

    Raises InputError for empty text, equal languages, a bad beam size, or text with nothing the
    model can read; problems it can work around (too long, unknown characters, very long words,
    German <-> French) become notes on the result.
    """
    text = "" if text is None else str(text).strip()
    if not text:
        raise InputError("There is nothing to translate: type a sentence first.")
    source, target = language_code(source), language_code(target)
    if source == target:
        raise InputError(f"Source and target are both {LANGUAGES[source]}: pick a different target language.")
    beam_size = beam_width(beam_size)
    if PIVOT not in (source, target):
        first = translate(text, source, PIVOT, beam_size)
        if not first.text.strip():
            raise InputError(f"The model found no English for this text, so it cannot go on to {LANGUAGES[target]}.")
        second = translate(first.text, PIVOT, target, beam_size)
        note = (
            f"The model learned only to and from English, so {LANGUAGES[source]} -> {LANGUAGES[target]} went "
            f'through English ("{first.text}"); the attention map shows the English -> {LANGUAGES[target]} step.'
        )
        second.notes = first.notes + [note] + second.notes
        return second
    return translate_into(text, target, beam_size)


def translate_into(text: str, target: str, beam_size: int = 4) -> Translation:
    """One pass of the model: `text` (any of its languages) into `target` ("de", "en", "fr"), with
    every encoder, decoder and cross-attention map of the result. translate() checks the request
    and calls this; the Attention Maps tab calls it too (`attention_of`), so both show the same."""
    model, tokenizer = get_model(TASK)
    source_ids, notes = read_source(tokenizer, text, model.config.max_len)
    output = translate_ids(model, [source_ids], language_id(tokenizer, target), beam_size)[0]
    if not output:
        notes.append("The model produced an empty translation.")
    # translate_ids drops </s>: a hypothesis that never produced it ran to the length limit
    finished = len(output) < max_output_len(model, len(source_ids))
    if not finished:
        notes.append("The decoder stopped at its length limit before it ended the sentence.")
    decoder_input = [language_id(tokenizer, target)] + output
    verdict = caption_verdict(model, tokenizer, text, source_ids, output, decoder_input[0])
    notes += verdict.reasons
    label = tokenizer.id_to_token
    source_tokens = [label(i) for i in source_ids]
    # decoder row i reads decoder_input[i] and writes the next piece; the last row writes </s>
    written = [label(i) for i in output] + [label(EOS_ID)]
    run = model.attention(
        torch.tensor([source_ids]),
        torch.tensor([decoder_input]),
        source_tokens,
        [label(i) for i in decoder_input],
        written,
    )
    return Translation(
        text=tokenizer.decode(output, skip_special_tokens=True),
        source_tokens=source_tokens,
        target_tokens=written,
        cross_attention=run["cross"].weights.numpy(),
        notes=notes,
        finished=finished,
        attention=run.maps,
        verdict=verdict,
    )


def attention_of(text: str, target: str = "de") -> AttentionView:
    """The Attention Maps tab's view of a translation of `text` into `target` (beam 4, as here)."""
    text = "" if text is None else str(text).strip()
    if not text:
        raise InputError("There is nothing to translate: type a sentence first.")
    result = translate_into(text, language_code(target))
    return AttentionView(result.attention, result.notes + [f"Translation: {result.text}"])


def beam_width(value) -> int:
    """The beam size as a whole number in 1..MAX_BEAM, or InputError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise InputError(f"Beam size must be a whole number from 1 to {MAX_BEAM}, not {value!r}.")
    if number < 1:
        raise InputError(f"Beam size {value} is less than minimum value 1.")
    if number > MAX_BEAM:
        raise InputError(f"Beam size {value} is greater than maximum value {MAX_BEAM}.")
    return int(number)


def read_source(tokenizer, text: str, max_len: int) -> tuple[list[int], list[str]]:
    """Source ids + </s> within max_len, read as evaluation reads them (models.translation.encode_source),
    and notes on what was left out or may go wrong."""
    source = encode_source(tokenizer, text, max_len)
    notes = []
    if source.unknown:
        shown = " ".join(source.unknown)
        notes.append(f"Left out characters the model has never seen (it knows English, German and French): {shown}")
    if not tokenizer.decode(source.ids[:-1]).strip():
        raise InputError(
            "The model cannot read any of this text: it knows English, German and French words, "
            "not emoji or other scripts."
        )
    long_words = [w for w in text.split() if len(w) > LONG_WORD]
    if long_words:
        shown = ", ".join(w[:LONG_WORD] + "…" for w in long_words[:3])
        notes.append(f"Very long words ({shown}) are read as many small pieces and may not translate well.")
    if source.truncated:
        notes.append(
            f"The text is {source.n_pieces} tokens long but the model reads at most {max_len - 1}: "
            f'only the beginning was translated (up to "…{text[max(0, source.end - 40) : source.end]}").'
        )
    return source.ids, notes


def attention_figure(result: Translation | None, layer: str, head: str):
    """The heatmap for one layer/head (numbered from 1), or their average ("average")."""
    if result is None or result.cross_attention.size == 0:
        return None
    weights = result.cross_attention
    layer_i = parse_selector(layer, weights.shape[0], "layer")
    head_i = parse_selector(head, weights.shape[1], "head")
    weights = weights.mean(axis=0) if layer_i is None else weights[layer_i]
    weights = weights.mean(axis=0) if head_i is None else weights[head_i]
    title = f"Cross-attention, layer {layer}, head {head}"
    return attention_heatmap(
        weights, result.target_tokens, result.source_tokens, title, query_axis="target", key_axis="source"
    )


# ----------------------------------------------------------------------------------------------
# The tab
# ----------------------------------------------------------------------------------------------


def _on_translate(text: str, source: str, target: str, beam_size: float, layer: str, head: str):
    """Runs with preprocess=False: API values arrive as sent, and translate() explains bad ones."""
    try:
        model, _ = get_model(TASK)
        parse_selector(layer, model.config.n_decoder_layers, "layer")
        parse_selector(head, model.config.n_heads, "head")
        result = translate(text, source, target, beam_size)
    except UserError as error:  # InputError, MissingCheckpoint, a bad layer/head
        raise gr.Error(str(error)) from None
    for note in result.notes:
        gr.Warning(note)
    return result.text, note_list(result.notes), attention_figure(result, layer, head), result


def note_list(notes: list[str]) -> str:
    return "\n".join(f"- {note}" for note in notes)


def _swap(text: str, translation: str, source: str, target: str):
    """Swap the languages; the translation becomes the new source text."""
    return (translation or text), "", target, source


def build() -> None:
    if not has_checkpoint(TASK):
        gr.Markdown(missing_message(TASK))
        return
    model, _ = get_model(TASK)
    names = list(LANGUAGES.values())
    # the tab opens with its first example translated and its cross-attention drawn
    example = EXAMPLES[0]
    first = worked_example(translate, *example)
    gr.Markdown(
        "One encoder-decoder Transformer, trained from scratch on Multi30k image captions, translates "
        "English <-> German and English <-> French (German <-> French goes through English). "
        "It knows short descriptions of everyday scenes best."
    )
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(
                example[0] if first else None,
                label="Source text",
                lines=3,
                max_length=2000,
                placeholder="A dog runs through the grass.",
            )
            with gr.Row():
                source = gr.Dropdown(names, value=example[1], label="From")
                swap = gr.Button("⇄ Swap", scale=0, min_width=80)
                target = gr.Dropdown(names, value=example[2], label="To")
            beam = gr.Slider(1, MAX_BEAM, value=example[3], step=1, label="Beam size (1 = greedy)")
            go = gr.Button("Translate", variant="primary")
        with gr.Column():
            translation = gr.Textbox(first.text if first else None, label="Translation", lines=3, interactive=False)
            notes = gr.Markdown(note_list(first.notes) if first else "", label="Notes")
    example_set = gr.Examples(EXAMPLES, inputs=[text, source, target, beam])
    gr.Markdown(
        "**Cross-attention.** One row per piece the decoder wrote, one column per source piece: a dark "
        "cell means that output looked hard at that input. Pick a decoder layer and head, or average them."
    )
    with gr.Row():
        layer = gr.Dropdown(selector_choices(model.config.n_decoder_layers), value="average", label="Layer")
        head = gr.Dropdown(selector_choices(model.config.n_heads), value="average", label="Head")
    # a label would sit over the start of the heatmap's title
    plot = gr.Plot(attention_figure(first, "average", "average"), show_label=False)
    state = gr.State(first)  # the result the layer and head selectors redraw

    inputs = [text, source, target, beam, layer, head]
    outputs = [translation, notes, plot, state]
    # preprocess=False: API values reach translate()'s checks as sent (a text beam size gets a sentence)
    listen(go.click, _on_translate, inputs, outputs, api_name="translate", preprocess=False)
    examples_that_run(example_set, _on_translate, inputs, outputs, preprocess=False)
    text.submit(_on_translate, inputs, outputs, api_visibility="private", preprocess=False, concurrency_id=CORES)
    swap.click(
        _swap,
        [text, translation, source, target],
        [text, translation, source, target],
        api_visibility="private",
        concurrency_id=CORES,
    )
    for selector in (layer, head):
        selector.change(
            shows_errors(attention_figure), [state, layer, head], plot, api_visibility="private", concurrency_id=CORES
        )
