"""The Image tab: our CIFAR-10 ViT says what a photo shows and where it looked.

`classify_image(image) -> ImageResult` is the plain inference function (tests and the API call
it); `build()` lays out the tab. Any file a person might send is either read (every PIL mode,
animated images by their first frame, huge JPEGs decoded at reduced scale) or refused with a
sentence that says why. A second choice, timm's ImageNet-pretrained ViT-Tiny, needs the Hugging
Face hub once to fetch its weights; offline it says so (demos/pretrained_vit.py). The example
pictures are drawn in demos/example_pictures.py.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from demos.common import (
    CORES,
    AttentionView,
    UserError,
    checkpoint_config,
    checkpoint_dir,
    doubt_label,
    get_model,
    has_checkpoint,
    listen,
    missing_message,
    parse_selector,
    shows_errors,
)
from demos.common import selector_choices as selector_choices_for
from demos.example_pictures import example_paths
from demos.plots import overlay
from demos.pretrained_vit import IMAGENET_SHAPE, pretrained_model, pretrained_unavailable
from demos.tools import examples_that_run
from models.attention_data import Attention
from models.confidence import Verdict, read_picture

TITLE = "Image"
TASK = "vision"
MAX_PIXELS = 50_000_000  # decoded at full size above this would cost seconds and gigabytes
MAX_JPEG_PIXELS = 400_000_000  # JPEGs decode at 1/8 scale, so they may be larger
DISPLAY = 256  # side of the pictures the tab shows


# the model choice: its label in the tab (also what the API takes) -> its key
OURS = "Ours: CIFAR-10 ViT trained from scratch (offline)"
IMAGENET = "timm's ImageNet-pretrained ViT-Tiny (fetched once from the Hugging Face hub)"
MODELS = {OURS: "ours", IMAGENET: "imagenet"}


class BadImage(UserError):
    """Input that is not a usable image; the message is meant for the person who sent it."""


@dataclass
class ImageResult:
    top5: dict[str, float]  # class -> probability, most likely first
    model_view: np.ndarray  # (img_size, img_size, 3) uint8: exactly what the model saw
    display: np.ndarray  # (DISPLAY, DISPLAY, 3) uint8: the same square, sharper, for overlays
    rollout: np.ndarray  # (grid, grid): attention rollout from CLS to each patch, sums to 1
    cls_attention: np.ndarray  # (layers, heads, grid, grid): CLS-to-patch weights per head
    notes: list[str] = field(default_factory=list)  # what was done to the input, for the user
    attention: Attention | None = None  # every layer and head (models.attention_data)
    verdict: Verdict | None = None  # whether the picture looks like CIFAR-10 at all (ours only)


# ----------------------------------------------------------------------------------------------
# Reading whatever was sent
# ----------------------------------------------------------------------------------------------


def load_image(source) -> tuple[Image.Image, list[str]]:
    """A path, bytes, numpy array or PIL image -> (a decoded PIL image, notes). Raises BadImage."""
    if isinstance(source, Image.Image):
        image, notes = source, []
    elif isinstance(source, np.ndarray):
        image, notes = _from_array(source), []
    elif isinstance(source, (str, Path, bytes, bytearray)):
        image, notes = _open(source)
    else:
        raise BadImage(f"Expected an image (file path, PIL image or array), got {type(source).__name__}.")
    w, h = image.size
    if w == 0 or h == 0:
        raise BadImage("The image is empty (0 pixels wide or high).")
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"Animated image: classified its first frame only (it has {image.n_frames}).")
    if min(w, h) < 16:
        notes.append(f"The image is only {w}x{h} pixels: the model sees it blown up, so do not trust much.")
    if image.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        notes.append("Greyscale image: the model learned from colour photos, so colour cues are missing.")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        notes.append("High bit depth image: scaled down to 8 bits per channel.")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        notes.append("Transparent areas were filled with white.")
    if image.mode == "CMYK":
        notes.append("CMYK image (print colours): converted to RGB.")
    return image, notes


def _open(source: str | Path | bytes | bytearray) -> tuple[Image.Image, list[str]]:
    """Open and decode a file, refusing decompression bombs before any pixel is decoded."""
    notes: list[str] = []
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not Path(source).is_file():
        raise BadImage(f"No such file: {Path(source).name}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limits follow
            image = Image.open(source)
    except Image.DecompressionBombError as err:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise BadImage(f"The image is far too large to open safely (over {limit:.0f} megapixels).") from err
    except UnidentifiedImageError as err:
        raise BadImage("This file is not an image that can be read (try JPEG, PNG, WebP, GIF, BMP or TIFF).") from err
    except OSError as err:
        raise BadImage(f"The file could not be read: {err}.") from err
    w, h = image.size
    limit = MAX_JPEG_PIXELS if image.format == "JPEG" else MAX_PIXELS
    if w * h > limit:
        raise BadImage(
            f"The image is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); images over {limit / 1e6:.0f} "
            "megapixels are refused (decoding them would take seconds and gigabytes). Please downscale it."
        )
    if image.format == "JPEG" and min(w, h) > 4 * DISPLAY:
        image.draft("RGB", (DISPLAY, DISPLAY))  # the JPEG decoder skips detail we would throw away
        notes.append(f"Large photo ({w}x{h}): decoded at reduced size.")
    try:
        image.load()  # decode now, so a damaged file fails here and not in the middle of the model
    except (OSError, ValueError, SyntaxError) as err:
        raise BadImage("The image file is damaged or incomplete and could not be decoded.") from err
    return image, notes


def _from_array(array: np.ndarray) -> Image.Image:
    """(H, W), (H, W, 1|3|4) arrays of uint8, uint16, bool or float (0..1 or 0..255) -> PIL."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise BadImage(f"An image array must be (H, W) or (H, W, 3|4); got shape {a.shape}.")
    if a.size == 0:
        raise BadImage("The image array is empty.")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        finite = np.nan_to_num(a.astype(np.float32))
        a = np.clip(finite * (255.0 if finite.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif a.dtype == np.uint16 and a.ndim == 2:
        return Image.fromarray(a)  # 16-bit greyscale; to_rgb scales it
    elif a.dtype != np.uint8:
        peak = max(int(a.max()), 1)
        a = (a.astype(np.float64) * (255.0 / (65535 if peak > 255 else 255))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(a)


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------


def classify_image(image, model: str = "ours") -> ImageResult:
    """Top-5 classes, the model's own view (32x32 for ours), attention rollout and per-head CLS
    attention, from our CIFAR-10 model (`model="ours"`) or timm's ImageNet one ("imagenet").

    Raises BadImage for unusable input, MissingCheckpoint when our model is absent and
    PretrainedUnavailable when the ImageNet one cannot be loaded."""
    from models.vision import center_square, image_tensor, to_rgb  # here: it imports timm (~2 s)

    if model not in MODELS.values():
        raise BadImage(f"Unknown model {model!r}; choose one of: {', '.join(MODELS.values())}.")
    ours = model == "ours"
    model = pretrained_model() if model == "imagenet" else get_model(TASK)[0]
    c = model.config
    pil, notes = load_image(image)
    rgb = to_rgb(pil)
    view = center_square(rgb, c.img_size)
    with torch.inference_mode():
        if ours:  # one pass gives the answer, the maps and the features the unsure check reads
            verdict, logits, weights = read_picture(model, np.asarray(view), checkpoint_dir(TASK), need_weights=True)
            run = model.attention_from(logits, weights)
        else:
            verdict, run = None, model.attention(image_tensor(view, c))
    notes = notes + (verdict.reasons if verdict else [])  # the tab shows them beside the answer
    probs = run.logits.softmax(-1)[0]
    attention = run["self"]
    top = probs.topk(min(5, c.num_classes))
    grid = attention.grid
    return ImageResult(
        top5={c.class_names[i]: float(p) for p, i in zip(top.values, top.indices, strict=True)},
        model_view=np.asarray(view),
        display=np.asarray(center_square(rgb, DISPLAY, Image.Resampling.BILINEAR)),  # only for overlays
        rollout=attention.cls_rollout().reshape(grid).numpy(),
        cls_attention=attention.cls_rows().reshape(attention.layers, attention.heads, *grid).numpy(),
        notes=notes,
        attention=attention,
        verdict=verdict,
    )


def attention_of(image) -> AttentionView:
    """The Attention Maps tab's view of classify_image: the CLS token's attention to the patches
    and its rollout, over the square the model saw."""
    result = classify_image(image)
    best, p = next(iter(result.top5.items()))
    side = result.model_view.shape[0]
    return AttentionView(
        {"CLS to patches": result.attention, "rollout": result.attention.as_rollout()},
        result.notes + [f"The model sees this {side}x{side} crop; it says {best} ({p:.0%})."],
        image=result.model_view,
    )


def cls_attention_map(result: ImageResult, layer: int | None = None, head: int | None = None) -> np.ndarray:
    """(grid, grid) CLS-to-patch attention of one layer/head; None averages over that axis."""
    maps = result.cls_attention
    maps = maps.mean(0) if layer is None else maps[layer]
    return maps.mean(0) if head is None else maps[head]


def enlarge(view: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """The 32x32 model view at display size, nearest neighbour so its pixels stay visible."""
    return np.asarray(Image.fromarray(view).resize((size, size), Image.Resampling.NEAREST))


# ----------------------------------------------------------------------------------------------
# The tab
# ----------------------------------------------------------------------------------------------


def _payload_source(payload) -> str | bytes | np.ndarray | Image.Image:
    """What gr.Image sends without preprocessing (a FileData dict) -> something load_image reads."""
    if isinstance(payload, dict):
        if payload.get("path"):
            return payload["path"]
        url = payload.get("url") or ""
        if url.startswith("data:") and "," in url:
            return base64.b64decode(url.split(",", 1)[1])
        raise BadImage("The upload arrived without a file; please try again.")
    return payload


def pick_map(result: ImageResult | None, layer_name: str, head_name: str) -> np.ndarray | None:
    """The CLS-attention picture for the chosen layer and head (from the kept result, no rerun)."""
    if result is None:
        return None
    layers, heads = result.cls_attention.shape[:2]
    layer, head = parse_selector(layer_name, layers, "layer"), parse_selector(head_name, heads, "head")
    return overlay(result.display, cls_attention_map(result, layer, head))


def classify_handler(payload, layer_name: str = "average", head_name: str = "average", model_name: str = OURS):
    """The tab's (and /classify_image's) handler: mistakes become gr.Error, notes gr.Warning."""
    import gradio as gr

    if payload is None:
        raise gr.Error("Upload a photo, take one with the webcam or paste one first.")
    if model_name not in MODELS:
        raise gr.Error(f"Unknown model {model_name!r}; choose one of: {'; '.join(MODELS)}.")
    try:
        result = classify_image(_payload_source(payload), MODELS[model_name])
        chosen = pick_map(result, layer_name, head_name)
    except UserError as err:  # BadImage, MissingCheckpoint, PretrainedUnavailable, a bad layer/head
        raise gr.Error(str(err)) from None
    for note in result.notes:
        gr.Warning(note)
    return (
        result.top5,
        enlarge(result.model_view),
        overlay(result.display, result.rollout),
        chosen,
        result,
    )


def label_doubt(result: ImageResult | None) -> dict:
    """The top-5 label's headline and title for a result (demos.common.doubt_label)."""
    unsure = result is not None and result.verdict is not None and not result.verdict.known
    return doubt_label(
        "Top 5", "Unsure: this may be none of the ten classes it knows (its guesses)" if unsure else None
    )


def selector_choices(model_name: str, ours: tuple[int, int]) -> tuple[list[str], list[str]]:
    """The layer and head dropdowns' choices for a model: "average", "1", "2", ... (demos.common)."""
    layers, heads = ours if MODELS.get(model_name) == "ours" else IMAGENET_SHAPE
    return selector_choices_for(layers), selector_choices_for(heads)


def build() -> None:
    import gradio as gr

    if not has_checkpoint(TASK):
        gr.Markdown(missing_message(TASK))
        return
    # the layout needs only the config: the model (and timm) load after start-up, see app.py
    c = SimpleNamespace(**checkpoint_config(TASK))
    c.grid_size = c.img_size // c.patch_size
    gr.Markdown(
        f"A Vision Transformer trained from scratch on CIFAR-10 ({', '.join(c.class_names)}). It sees your "
        f"picture as a {c.img_size}x{c.img_size} square cut into {c.grid_size}x{c.grid_size} patches of "
        f"{c.patch_size}x{c.patch_size} pixels, one token each, plus a CLS token whose final state is classified. "
        "Attention rollout multiplies the attention of all layers (plus the residual path) to show which "
        "patches the CLS token drew on in the end. For comparison, a ViT pretrained on ImageNet by timm "
        "(1000 classes, 224x224 as 14x14 patches) can be chosen when the machine is online."
    )
    ours = (c.n_layers, c.n_heads)
    with gr.Row():
        with gr.Column():
            photo = gr.Image(label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"], height=300)
            why_not = pretrained_unavailable()
            model = gr.Radio([OURS] if why_not else list(MODELS), value=OURS, label="Model")
            if why_not:
                gr.Markdown(f"*{why_not}*")
            run = gr.Button("Classify", variant="primary")
            example_set = gr.Examples(example_paths(), inputs=photo, label="Drawn examples (not CIFAR images)")
        with gr.Column():
            label = gr.Label(num_top_classes=5, label="Top 5")
            with gr.Row():
                view = gr.Image(label="The model's input", interactive=False)
                rollout = gr.Image(label="Attention rollout", interactive=False)
    with gr.Row():
        with gr.Column():
            gr.Markdown(
                "**One layer, one head.** Where the CLS token looks in a single layer and head (row 0 of its map)."
            )
            layer_choices, head_choices = selector_choices(OURS, ours)
            layer = gr.Dropdown(layer_choices, value="average", label="Layer")
            head = gr.Dropdown(head_choices, value="average", label="Head")
        cls_map = gr.Image(label="CLS-to-patch attention of the chosen layer and head", interactive=False)
    state = gr.State()

    # preprocess=False: the raw upload reaches classify_image, which opens it safely and can
    # say what is wrong with it (gr.Image's own decoding would fail with a generic error)
    inputs, outputs = [photo, layer, head, model], [label, view, rollout, cls_map, state]
    classified = listen(run.click, classify_handler, inputs, outputs, api_name="classify_image", preprocess=False)
    example_run = examples_that_run(example_set, classify_handler, inputs, outputs, preprocess=False)
    for event in (classified, example_run):
        event.success(label_doubt, state, label, api_visibility="private", concurrency_id=CORES)
    for control in (layer, head):
        control.change(
            shows_errors(pick_map), [state, layer, head], cls_map, api_visibility="private", concurrency_id=CORES
        )

    def switch_model(model_name: str):
        """Another model: its own layers and heads to choose from, and no stale results."""
        layers, heads = selector_choices(model_name, ours)
        cleared = (None, None, None, None, None)
        return gr.update(choices=layers, value="average"), gr.update(choices=heads, value="average"), *cleared

    model.change(
        switch_model,
        model,
        [layer, head, label, view, rollout, cls_map, state],
        api_visibility="private",
        concurrency_id=CORES,
    )
