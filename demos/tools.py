"""The app's tools for programs and language models: plain values in, plain data out.

`register()` (inside the app's Blocks) adds one API endpoint per tool with `gr.api`; with
`launch(mcp_server=True)` each is also an MCP tool at /gradio_api/mcp/ (schema:
/gradio_api/mcp/schema). The docstrings below are what an MCP client reads: the first paragraph
describes the tool, "Args" its parameters.
`examples_that_run` makes a tab's examples show their result in one click. The tabs' own endpoints
(/generate, /translate, /attention_map, ...) are callable but undocumented (demos.common.listen), so
the API page and the MCP tool list show these tools alone.
"""

from __future__ import annotations

import gradio as gr
from gradio.data_classes import FileData

from demos.common import CORES, has_checkpoint, shows_errors


def translate_text(text: str, source: str = "English", target: str = "German", beam_size: int = 4) -> str:
    """Translate a short sentence between English, German and French with a small transformer
    trained from scratch on Multi30k image captions (everyday scenes: people, animals, streets).
    German <-> French goes through English.

    Args:
        text: the sentence to translate, in the source language (best under 40 words).
        source: the language of the text: English, German or French (or en, de, fr).
        target: the language to translate into: English, German or French (or en, de, fr).
        beam_size: beam search width from 1 (greedy) to 8; 4 is a good default.
    """
    from demos import translation

    return translation.translate(text, source, target, beam_size).text


def next_characters(prompt: str, temperature: float = 1.0) -> dict[str, float]:
    """The ten most likely next characters after a prompt, with their probabilities, from a small
    character-level GPT trained on Shakespeare's plays.

    Args:
        prompt: the text so far (Shakespeare-style English works best; other characters are dropped).
        temperature: 0 (always the most likely) to 5; 1 keeps the model's own probabilities.
    """
    from demos import generation

    return dict(generation.next_token_distribution(prompt, temperature))


def classify_picture(image: FileData) -> dict[str, float]:
    """Name what a photo shows with a Vision Transformer trained from scratch on CIFAR-10. It knows
    only ten classes (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck) and sees
    the picture's centre square at 32x32 pixels. Returns the five most likely classes with their
    probabilities.

    Args:
        image: the photo (PNG, JPEG, WebP, GIF, ...).
    """
    from demos import vision

    return vision.classify_image(_path(image)).top5


def classify_spoken_digit(audio: FileData) -> dict[str, float]:
    """Recognise one spoken English digit (zero to nine) in a recording with a small audio
    transformer trained on the Free Spoken Digit Dataset. Returns the three most likely digits with
    their probabilities.

    Args:
        audio: the recording (WAV, FLAC or OGG; any sample rate, mono or stereo, up to 30 s).
    """
    from demos import audio as audio_tab

    return audio_tab.classify_audio(_path(audio)).top3


def fill_in_blanks(text: str, top_k: int = 5) -> dict:
    """Fill each [MASK] in an English sentence with a small BERT-style model trained on Multi30k
    image captions. Returns the sentence with the most likely word piece in each blank, and the top
    candidates with probabilities for every blank.

    Args:
        text: an English sentence with one or more [MASK] blanks, e.g. "A man is [MASK] a bike."
        top_k: how many candidates to list per blank, 1 to 20.
    """
    from demos import fill_mask

    return fill_mask.as_json(fill_mask.fill_mask(text, top_k))


def _path(file) -> str:
    """A gr.api file argument (a FileData dict, or the object itself) -> its local path."""
    return file["path"] if isinstance(file, dict) else file.path


# each tool and the checkpoint (task) it needs
TOOLS = {
    "translation": translate_text,
    "generation": next_characters,
    "vision": classify_picture,
    "audio": classify_spoken_digit,
    "mlm": fill_in_blanks,
}


def tools() -> list:
    """The tools whose model is here: like a tab, a tool without its checkpoint is left out."""
    found = []
    for task, tool in TOOLS.items():
        if has_checkpoint(task):
            found.append(tool)
    return found


def register() -> None:
    """One API endpoint (and MCP tool) per tool, in the app's one queue; call inside gr.Blocks."""
    for tool in tools():
        gr.api(shows_errors(tool), api_name=tool.__name__, concurrency_id=CORES)


def examples_that_run(examples: gr.Examples, fn, inputs: list, outputs: list, **kwargs) -> gr.Dependency:
    """One click on an example shows its result: once the example has filled the inputs, `fn` runs
    on them, in the app's one queue and outside the API (`kwargs` as for the tab's own button)."""
    return examples.load_input_event.then(fn, inputs, outputs, concurrency_id=CORES, api_visibility="private", **kwargs)
