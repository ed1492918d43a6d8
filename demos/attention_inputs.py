"""The input widgets of the Attention Maps tab: one set for each kind of input a model of the
registry reads (text, text and a target language, an image, a recording), the chosen model's
visible. The models themselves run through their own tabs' functions (demos/attention_maps.py)."""

from __future__ import annotations

import gradio as gr

from demos import registry

TEXT_INPUTS = (registry.TEXT, registry.TEXT_TO_LANGUAGE)


def _upload_path(value):
    """An upload as Gradio passes it without preprocessing (a FileData dict) -> its path."""
    if isinstance(value, dict):
        return value.get("path")
    return value


def values(task: str, components: tuple) -> dict:
    """The widgets' values (text, target, image, audio; preprocessed or as an API caller sent
    them) -> attention_map's keyword arguments for `task`."""
    text, target, image, audio = components
    kind = registry.model(task).input if task in registry.tasks() else registry.TEXT
    if kind == registry.IMAGE:
        return {"image": _upload_path(image)}
    if kind == registry.AUDIO:
        return {"audio": _upload_path(audio)}
    return {"text": "" if text is None else str(text), "target": target if kind == registry.TEXT_TO_LANGUAGE else ""}


def visibility(task: str) -> list:
    """Updates of the four widgets for `task`: its own visible (text reset to its example)."""
    entry = registry.model(task)
    return [
        gr.update(visible=entry.input in TEXT_INPUTS, value=entry.example),
        gr.update(visible=entry.input == registry.TEXT_TO_LANGUAGE),
        gr.update(visible=entry.input == registry.IMAGE, value=None),
        gr.update(visible=entry.input == registry.AUDIO, value=None),
    ]


def input_components(task: str) -> list:
    """Lay out the input widgets (text, target, image, audio), the ones of `task` visible."""
    from models.translation import LANGUAGES

    entry = registry.model(task)
    with gr.Row():
        text = gr.Textbox(entry.example, label="text", lines=2, visible=entry.input in TEXT_INPUTS, scale=3)
        target = gr.Dropdown(
            [(name, code) for code, name in LANGUAGES.items()],
            value="de",
            label="translate into",
            visible=entry.input == registry.TEXT_TO_LANGUAGE,
        )
        # file paths, read by the Image and Audio tabs' own readers: a bad upload gets their message
        image = gr.Image(
            type="filepath", image_mode=None, label="image", visible=entry.input == registry.IMAGE, height=220
        )
        audio = gr.Audio(type="filepath", label="recording", visible=entry.input == registry.AUDIO)
    return [text, target, image, audio]
