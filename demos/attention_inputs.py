"""Running each of the four models once with `need_weights=True` on an input given in the
Attention Maps tab, and naming the positions its attention maps show (tokens, patches, times).

Each model's own preprocessing is reused (models.vision.preprocess, models.audio.prepare_waveform,
models.translation.encode_source), so the maps show exactly what the other tabs' models see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from demos.common import get_model

MAX_TEXT_TOKENS = 128  # beyond this a token heatmap is unreadable (and the model view slow)
EXAMPLES = {
    "generation": "ROMEO:\nBut soft, what light through yonder window breaks?",
    "translation": "A little girl is climbing into a wooden playhouse.",
}


@dataclass
class ModelRun:
    """One forward pass: attentions as the model returns them, and what each position is."""

    attentions: list[dict]
    source_labels: list[str]  # encoder / only sequence (for vision and audio: CLS + patches/frames)
    target_labels: list[str] = field(default_factory=list)  # decoder sequence (translation)
    image: np.ndarray | None = None  # the picture the patches cover (vision)
    patch_grid: tuple[int, int] | None = None
    key_times: np.ndarray | None = None  # seconds of each frame token (audio)
    spectrogram: np.ndarray | None = None  # (n_mels, frames) dB, for display under the map (audio)
    spectrogram_times: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def char_label(c: str) -> str:
    """Visible names for characters a heatmap axis would swallow."""
    return {" ": "␣", "\n": "⏎", "\t": "⇥"}.get(c, c)


def generation_attention(text: str) -> ModelRun:
    """GPT (causal self-attention) on the characters of `text`."""
    model, tokenizer = get_model("generation")
    notes = []
    unknown = tokenizer.unknown(text)
    if unknown:
        notes.append(f"Characters the model never saw were left out: {' '.join(map(repr, unknown))}.")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("Type some text: the model needs at least one character it knows.")
    limit = min(MAX_TEXT_TOKENS, model.config.context_len)
    if len(ids) > limit:
        notes.append(f"Showing the first {limit} of {len(ids)} characters.")
        ids = ids[:limit]
    out = model(torch.tensor([ids]), need_weights=True)
    return ModelRun(out.attentions, [char_label(tokenizer.decode([i])) for i in ids], notes=notes)


def translation_attention(text: str, target: str) -> ModelRun:
    """Translate `text` into `target` (beam search, as the Translation tab), then run the pair
    through the model once with teacher forcing to read every encoder, decoder and cross map."""
    from models.translation import EOS_ID, encode_source, language_id, translate_ids

    model, tokenizer = get_model("translation")
    if not text.strip():
        raise ValueError("Type a sentence to translate.")
    limit = min(MAX_TEXT_TOKENS, model.config.max_len)
    source, truncated = encode_source(tokenizer, text, limit)
    notes = [f"Only the first {limit - 1} source tokens were used."] if truncated else []
    output = translate_ids(model, [source], language_id(tokenizer, target), beam_size=4)[0]
    # decoder input: the language token, then the translation; row i predicts token i+1 (or </s>)
    target_ids = [language_id(tokenizer, target)] + output[: model.config.max_len - 1]
    out = model(torch.tensor([source]), torch.tensor([target_ids]), need_weights=True)
    notes.append(f"Translation: {tokenizer.decode(output, skip_special_tokens=True)}")
    label = tokenizer.id_to_token
    return ModelRun(
        out.attentions,
        [label(i) for i in source],
        [label(i) for i in target_ids],
        notes=notes + ([] if EOS_ID in output else ["(the decoder stopped at its length limit)"]),
    )


def _as_pil(image) -> tuple[Image.Image, list[str]]:
    """A PIL image, an array, or an uploaded file's path (read as the Image tab reads it: a file
    that is not a usable image is a ValueError that says why) -> (image, notes)."""
    if image is None:
        raise ValueError("Upload an image first.")
    if isinstance(image, Image.Image):
        return image, []
    if isinstance(image, (str, Path)):
        from demos.vision import load_image

        return load_image(image)
    return Image.fromarray(np.asarray(image)), []


def vision_attention(image) -> ModelRun:
    """ViT on a picture: CLS + one token per patch, the picture cropped as the model sees it."""
    from models.vision import center_square, to_rgb

    model, _ = get_model("vision")
    c = model.config
    picture, notes = _as_pil(image)
    picture = to_rgb(picture)
    out = model(model.preprocess(picture), need_weights=True)
    g = c.grid_size
    labels = ["CLS"] + [f"patch r{r} c{col}" for r in range(g) for col in range(g)]
    probs = out.logits.softmax(-1)[0]
    best = int(probs.argmax())
    return ModelRun(
        out.attentions,
        labels,
        image=np.asarray(center_square(picture, c.img_size)),
        patch_grid=(g, g),
        notes=notes
        + [f"The model sees this {c.img_size}x{c.img_size} crop; it says {c.class_names[best]} ({probs[best]:.0%})."],
    )


def audio_attention(audio) -> ModelRun:
    """Audio transformer on a recording ((sample_rate, samples), or an uploaded file's path, read
    as the Audio tab reads it): CLS + one token per few spectrogram frames, each labelled with its
    time in the prepared clip."""
    from models.audio import log_mel, prepare_waveform

    if audio is None:
        raise ValueError("Record or upload a clip first.")
    if isinstance(audio, (str, Path)):
        from demos.audio import read_audio

        sample_rate, samples, notes = read_audio(audio)
    else:
        (sample_rate, samples), notes = audio, []
    model, _ = get_model("audio")
    c = model.config
    waveform, prepare_notes = prepare_waveform(np.asarray(samples), sample_rate, c)
    notes += prepare_notes
    out = model(waveform[None], need_weights=True)
    n_tokens = out.attentions[0]["self"].shape[-1] - 1
    times = c.token_times(n_tokens)
    spec = log_mel(waveform, c)
    probs = out.logits.softmax(-1)[0]
    best = int(probs.argmax())
    notes.append(f"The model hears {c.class_names[best]} ({probs[best]:.0%}).")
    return ModelRun(
        out.attentions,
        ["CLS"] + [f"{t:.2f} s" for t in times],
        key_times=times,
        spectrogram=spec,
        spectrogram_times=c.frame_times(spec.shape[1]),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------
# The input widgets of the Attention Maps tab, one set per model, shown for the chosen model
# ----------------------------------------------------------------------------------------------


def _upload_path(value):
    """An upload as Gradio passes it without preprocessing (a FileData dict) -> its path."""
    if isinstance(value, dict):
        return value.get("path")
    return value


@dataclass
class InputComponents:
    text: gr.Textbox
    target: gr.Dropdown
    image: gr.Image
    audio: gr.Audio

    @property
    def components(self) -> list:
        return [self.text, self.target, self.image, self.audio]

    @staticmethod
    def values(task: str, values) -> dict:
        """Component values (preprocessed, or as an API caller sent them) -> attention_map keyword
        arguments for `task`."""
        text, target, image, audio = values
        if task == "vision":
            return {"image": _upload_path(image)}
        if task == "audio":
            return {"audio": _upload_path(audio)}
        return {"text": "" if text is None else str(text), "target": target if task == "translation" else ""}

    @staticmethod
    def visibility(task: str) -> list:
        text_value = EXAMPLES.get(task)
        return [
            gr.update(visible=task in ("generation", "translation"), value=text_value),
            gr.update(visible=task == "translation"),
            gr.update(visible=task == "vision"),
            gr.update(visible=task == "audio"),
        ]


def input_components(task: str) -> InputComponents:
    """Lay out the input widgets, the ones of `task` visible."""
    from models.translation import LANGUAGES

    with gr.Row():
        text = gr.Textbox(
            EXAMPLES.get(task, ""), label="text", lines=2, visible=task in ("generation", "translation"), scale=3
        )
        target = gr.Dropdown(
            [(name, code) for code, name in LANGUAGES.items()],
            value="de",
            label="translate into",
            visible=task == "translation",
        )
        # file paths, read by the Image and Audio tabs' own readers: a bad upload gets their message
        image = gr.Image(type="filepath", image_mode=None, label="image", visible=task == "vision", height=220)
        audio = gr.Audio(type="filepath", label="recording", visible=task == "audio")
    return InputComponents(text, target, image, audio)
