"""Attention Lab tab: the attention formula (docs/concepts.md), step by step, with real numbers and small matrices.

For a short text: embeddings plus positional encoding; Q = XW_Q, K = XW_K, V = XW_V; scores QK^T;
scaling by sqrt(d_k) (switch it off to watch the softmax saturate); the mask with its -inf
entries; softmax; the weighted sum of V; the split into heads, their concatenation and W_O.
Every number comes from a real `models.attention.MultiHeadAttention`: the first layer of the
translation or generation model, taken through the model's public `attention_layer()`, or a
seeded random one; `attention_lab` checks its result against that module's own forward pass.

Beside it (demos/efficiency.py): the sinusoidal positional encoding and its position-similarity
matrix, the warmup learning-rate schedule, and time and memory of attention against length.
"""

from __future__ import annotations

import copy
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr
import torch
from torch import Tensor, nn

from demos import efficiency
from demos.common import (
    UserError,
    checkpoint_config,
    checkpoint_dir,
    get_model,
    has_checkpoint,
    listen,
    shows_errors,
    worked_example,
)
from demos.lab_figures import SATURATION_HEADERS, STEP_ORDER, empty_figure, lab_summary, saturation_table, step_figures
from demos.plots import char_label, unique_labels
from models.analysis import attention_entropy
from models.attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention
from models.positional import SinusoidalPositionalEncoding

TITLE = "Attention Lab"
# the paper's sinusoidal encoding first: the first of these that is available is the default
SOURCES = {
    "translation": "first encoder layer of the translation model (subwords, sinusoidal positions)",
    "generation": "first layer of the text-generation GPT (characters, RoPE)",
    "random": "a seeded random layer (d_model 64, 4 heads; words, sinusoidal positions)",
}
MASKS = ("none", "causal", "padding")
MAX_TOKENS = 16  # matrices stay readable
PADS = 2  # padding positions appended to show the padding mask
RANDOM_D_MODEL, RANDOM_HEADS, RANDOM_SEED, RANDOM_PAD = 64, 4, 0, -1
EXAMPLE = "the cat sat on the mat"


# ----------------------------------------------------------------------------------------------
# The layer under the microscope
# ----------------------------------------------------------------------------------------------


@dataclass
class LabLayer:
    """One self-attention layer with what comes before it, in float64."""

    source: str
    tokenize: Callable[[str], tuple[list[str], list[int]]]  # text -> (labels, ids)
    embed: Callable[[Tensor], Tensor]  # ids (T,) -> token embeddings (T, d), scaled as the model does
    positional: nn.Module | None  # additive encoding (None: RoPE inside attention, or none)
    norm: nn.Module | None  # pre-norm: attention reads LayerNorm(X)
    attention: MultiHeadAttention
    pad_id: int = 0
    notes: list[str] = field(default_factory=list)


_LAYERS: dict[tuple[str, str], LabLayer] = {}


def available_sources() -> list[str]:
    return [s for s in SOURCES if s == "random" or has_checkpoint(s)]


def default_source() -> str:
    """The first available layer with the paper's sinusoidal positional encoding."""
    for source in available_sources():
        if source == "random" or checkpoint_config(source).get("positional") == "sinusoidal":
            return source
    return "random"


def head_count(source: str) -> int:
    """Heads of `source`'s layer, read from its config (no model load)."""
    if source == "random":
        return RANDOM_HEADS
    if source not in SOURCES:
        raise UserError(f"Unknown layer {source!r}; choose one of {', '.join(SOURCES)}.")
    return int(checkpoint_config(source)["n_heads"])


def lab_layer(source: str) -> LabLayer:
    """The first attention layer of `source` ('translation', 'generation' or 'random'), cached."""
    if source not in SOURCES:
        raise UserError(f"Unknown layer {source!r}; choose one of {', '.join(SOURCES)}.")
    key = (source, str(checkpoint_dir(source)) if source != "random" else "")
    if key not in _LAYERS:
        _LAYERS[key] = _random_layer() if source == "random" else _model_layer(source)
    return _LAYERS[key]


def _double(module: nn.Module | None) -> nn.Module | None:
    return None if module is None else copy.deepcopy(module).double().eval()


def _model_layer(source: str) -> LabLayer:
    """The first layer of a checkpoint's model, through its public `attention_layer()`."""
    model, tokenizer = get_model(source)
    layer = model.attention_layer(0)

    if source == "generation":

        def tokenize(text: str) -> tuple[list[str], list[int]]:
            ids = tokenizer.encode(text)
            return [char_label(tokenizer.decode([i])) for i in ids], ids

        pad_id = 0
    else:

        def tokenize(text: str) -> tuple[list[str], list[int]]:
            ids = tokenizer.encode(text).ids
            return [tokenizer.id_to_token(i) for i in ids], ids

        pad_id = model.config.pad_id
    notes = []
    if layer.positional_name == "rope":
        notes.append("This model adds no positional vector: RoPE rotates Q and K by position inside attention.")
    return LabLayer(
        source,
        tokenize,
        lambda ids: layer.embed(ids).double(),  # float32 weights; every later step runs in float64
        _double(layer.positional),
        _double(layer.norm),
        _double(layer.attention),
        pad_id=pad_id,
        notes=notes,
    )


def _random_layer() -> LabLayer:
    """Each word's embedding is random but fixed (seeded by the word), the weights are
    N(0, 1/d_model): scores then have a variance that grows with d_k, as docs/concepts.md explains, so
    the unscaled softmax visibly saturates."""
    d = RANDOM_D_MODEL
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    attention = MultiHeadAttention(d, RANDOM_HEADS).double().eval()
    with torch.no_grad():
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj):
            linear.weight.copy_(torch.randn(d, d, generator=generator, dtype=torch.float64) * d**-0.5)
            linear.bias.zero_()

    def tokenize(text: str) -> tuple[list[str], list[int]]:
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        return words, [zlib.crc32(w.encode()) for w in words]  # the id is the word's seed

    def embed(ids: Tensor) -> Tensor:
        rows = [
            torch.zeros(d, dtype=torch.float64)
            if i == RANDOM_PAD
            else torch.randn(d, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
            for i in ids.tolist()
        ]
        return torch.stack(rows)

    positional = _double(SinusoidalPositionalEncoding(d, max_len=4 * MAX_TOKENS))
    return LabLayer("random", tokenize, embed, positional, None, attention, pad_id=RANDOM_PAD)


# ----------------------------------------------------------------------------------------------
# The steps, with numbers
# ----------------------------------------------------------------------------------------------


class NoSuchToken(UserError):
    """The close-up asked for a token past the end of the text."""


@dataclass
class LabResult:
    """Every intermediate of one self-attention layer on one text (float64; heads first)."""

    source: str
    labels: list[str]
    head: int  # the head the single-head steps show (0-based)
    query: int  # the token whose query the close-up shows (0-based)
    n_tokens: int  # the text's tokens; padding (mask "padding") comes after them
    scaled: bool
    mask_kind: str
    token_embeddings: Tensor  # (T, d)
    positional: Tensor | None  # (T, d) added to the embeddings
    x: Tensor  # (T, d) the layer's input X
    x_attention: Tensor  # (T, d) what W_Q, W_K, W_V read (LayerNorm(X) in a pre-norm layer)
    q: Tensor  # (H, T, d_k) per head, after RoPE if the model uses it
    k: Tensor
    v: Tensor
    scores: Tensor  # (H, T, T) QK^T, before scaling
    scale: float  # 1/sqrt(d_k), or 1 with the switch off
    mask: Tensor | None  # (T, T) bool, True = may attend
    masked_scores: Tensor  # (H, T, T) scaled scores with -inf where the mask forbids
    weights: Tensor  # (H, T, T) softmax rows
    head_outputs: Tensor  # (H, T, d_k) weights @ V
    concatenated: Tensor  # (T, d)
    output: Tensor  # (T, d) concatenated W_O^T + b
    entropy: dict[str, Tensor]  # "scaled"/"unscaled" -> (H,) bits, mean over queries
    max_weight: dict[str, Tensor]  # "scaled"/"unscaled" -> (H,) mean of each row's largest weight
    reference_difference: float  # max |output - MultiHeadAttention(x)| (scaled runs; NaN unscaled)
    notes: list[str]


def build_mask(kind: str, is_token: Tensor) -> Tensor | None:
    """The (T, T) boolean mask of `kind` from models.attention (True = may attend)."""
    t = is_token.numel()
    if kind == "none":
        return None
    if kind == "causal":
        return causal_mask(t)
    if kind == "padding":
        return padding_mask(is_token[None])[0, 0].expand(t, t)
    raise UserError(f"Unknown mask {kind!r}; choose one of {', '.join(MASKS)}.")


@torch.no_grad()
def attention_lab(
    text: str = EXAMPLE,
    source: str = "random",
    mask: str = "causal",
    scaled: bool = True,
    head: int = 1,
    query: int | None = None,
) -> LabResult:
    """Run `source`'s first attention layer on `text` step by step; head and query (the token
    whose query the close-up shows, the last one by default) are 1-based."""
    layer = lab_layer(source)
    if mask not in MASKS:
        raise UserError(f"Unknown mask {mask!r}; choose one of {', '.join(MASKS)}.")
    labels, ids = layer.tokenize(text)
    notes = list(layer.notes)
    if not ids:
        raise UserError("Type a few words: the layer's tokenizer found no token in this text.")
    if len(ids) > MAX_TOKENS:
        notes.append(f"Using the first {MAX_TOKENS} of {len(ids)} tokens, so the matrices stay readable.")
        labels, ids = labels[:MAX_TOKENS], ids[:MAX_TOKENS]
    n_tokens = len(ids)
    if query is None:
        query = n_tokens
    if not 1 <= query <= n_tokens:
        raise NoSuchToken(f"Token {query} does not exist: the text has {n_tokens} tokens.")
    is_token = torch.ones(len(ids), dtype=torch.bool)
    if mask == "padding":  # a batch pads shorter sentences; those keys must get no attention
        labels, ids = labels + ["<pad>"] * PADS, ids + [layer.pad_id] * PADS
        is_token = torch.cat([is_token, torch.zeros(PADS, dtype=torch.bool)])
    mha = layer.attention
    n_heads = mha.n_heads
    if not 1 <= head <= n_heads:
        raise UserError(f"Head {head} does not exist: this layer has {n_heads} heads.")

    # 1. embeddings plus positional encoding
    embeddings = layer.embed(torch.tensor(ids))
    x = embeddings[None]
    positional = None
    if layer.positional is not None:
        x = layer.positional(x)
        positional = (x - embeddings[None])[0]
    x_attention = layer.norm(x) if layer.norm is not None else x
    # 2. Q = X W_Q, K = X W_K, V = X W_V, split into heads (the module's own projections, and its
    # QK-norm where the model has one)
    q, k, v = mha.queries(x_attention), mha.keys(x_attention), mha.split_heads(mha.v_proj(x_attention))
    if mha.rope is not None:
        q, k = mha.rope(q), mha.rope(k)
    # 3.-6. scores, scaling, mask, softmax: the formula of models.attention, written out
    d_k = q.size(-1)
    scale = 1 / math.sqrt(d_k) if scaled else 1.0
    scores = q @ k.transpose(-2, -1)
    mask_tt = build_mask(mask, is_token)
    masked = scores * scale
    if mask_tt is not None:
        masked = masked.masked_fill(~mask_tt, float("-inf"))
    head_outputs, weights = scaled_dot_product_attention(q, k, v, mask_tt, scale=scale)
    # 7. concatenate the heads and mix them with W_O
    concatenated = head_outputs.transpose(1, 2).reshape(1, len(ids), -1)
    output = mha.out_proj(concatenated)

    entropy, max_weight = {}, {}
    for name, s in (("scaled", 1 / math.sqrt(d_k)), ("unscaled", 1.0)):
        w = scaled_dot_product_attention(q, k, v, mask_tt, scale=s)[1][0]
        entropy[name] = attention_entropy(w)
        max_weight[name] = w.max(dim=-1).values.mean(dim=-1)
    # the module's own forward (torch's fused kernel): an independent computation of the same output
    reference, _ = mha(x_attention, mask=mask_tt)
    difference = float((reference - output).abs().max()) if scaled else float("nan")
    return LabResult(
        source=layer.source,
        labels=unique_labels(labels),
        head=head - 1,
        query=query - 1,
        n_tokens=n_tokens,
        scaled=scaled,
        mask_kind=mask,
        token_embeddings=embeddings,
        positional=positional,
        x=x[0],
        x_attention=x_attention[0],
        q=q[0],
        k=k[0],
        v=v[0],
        scores=scores[0],
        scale=scale,
        mask=mask_tt,
        masked_scores=masked[0],
        weights=weights[0],
        head_outputs=head_outputs[0],
        concatenated=concatenated[0],
        output=output[0],
        entropy=entropy,
        max_weight=max_weight,
        reference_difference=difference,
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------
# The tab
# ----------------------------------------------------------------------------------------------


def whole(value) -> int:
    """A head number from a slider or an API caller: a whole number, or a ValueError that says so."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise UserError(f"The head must be a whole number, not {value!r}.")
    return int(number)


def lab_outputs(text: str, source: str, mask: str, scaled: bool, head: int, query: int | None = None) -> tuple:
    """What the tab shows: summary, saturation table, one figure per step (STEP_ORDER), and the
    query-token choices of the close-up (its figure is the step "query")."""
    result = attention_lab(text, source, mask, bool(scaled), int(head), query)
    figs = step_figures(result)
    figs.setdefault("positional", empty_figure("no PE added: RoPE rotates Q and K"))
    table = {"headers": SATURATION_HEADERS, "data": saturation_table(result)}
    tokens = [(label, n) for n, label in enumerate(result.labels[: result.n_tokens], start=1)]
    queries = gr.update(choices=tokens, value=result.query + 1)
    return (lab_summary(result, SOURCES[result.source]), table, *(figs[name] for name in STEP_ORDER), queries)


def kept_query(value) -> int | None:
    """The close-up's token from its dropdown, or None (the last token) when there is none yet."""
    try:
        return whole(value) if value is not None else None
    except UserError:
        return None


def head_slider(source: str, head) -> dict:
    """The head slider for `source`'s layer: 1 to its number of heads, keeping the head if it exists."""
    count = head_count(source)
    try:
        value = min(max(1, whole(head)), count)
    except UserError:
        value = 1
    return gr.update(minimum=1, maximum=count, value=value)


def build() -> None:
    sources = available_sources()
    default = default_source()
    gr.Markdown(
        "The attention formula, **softmax(QKᵀ/√d_k)·V**, on your text, with the real weights "
        "of a layer. Wide matrices show their first columns; hover for values. "
        + ("" if len(sources) == 3 else "Without the generation/translation checkpoints only the random layer is here.")
    )
    with gr.Row():
        text = gr.Textbox(EXAMPLE, label="a short text", scale=3)
        source = gr.Radio(sources, value=default, label="layer")
    with gr.Row():
        mask = gr.Radio(list(MASKS), value="causal", label="mask")
        scaled = gr.Checkbox(True, label="divide the scores by √d_k")
        head = gr.Slider(1, head_count(default), value=1, step=1, label="head")
        run = gr.Button("Run the steps", variant="primary")
    # the tab opens with its example worked out: the default text, layer and mask, head 1
    empty = (None, None, *(None for _ in STEP_ORDER), {"choices": [], "value": None})
    first = worked_example(lab_outputs, EXAMPLE, default, "causal", True, 1, fallback=empty)
    first_figures = dict(zip(STEP_ORDER, first[2:-1], strict=True))
    summary = gr.Markdown(first[0])
    saturation = gr.Dataframe(first[1], label="softmax saturation per head", headers=SATURATION_HEADERS)
    plots: dict[str, gr.Plot] = {}
    sections = (
        ("1. Embeddings plus positional encoding: X", ("embeddings", "positional", "x")),
        ("2. Q = XW_Q, K = XW_K, V = XW_V (one head's slice)", ("q", "k", "v")),
        ("3. Scores QKᵀ, scaling by √d_k and the mask", ("scores", "masked")),
        ("3b. One query up close: which dimensions of q and k make each score", ("query",)),
        ("4. Softmax and the weighted sum of V", ("weights", "head_output")),
        ("5. All heads, their concatenation and W_O", ("heads",)),
        ("", ("concatenated", "output")),
    )
    for title, names in sections:
        if title:
            gr.Markdown(f"### {title}")
        if "query" in names:
            query = gr.Dropdown(
                first[-1]["choices"], value=first[-1]["value"], label="query token", allow_custom_value=True
            )
        with gr.Row():
            for name in names:
                plots[name] = gr.Plot(first_figures[name], show_label=False)

    @shows_errors
    def handler(text_v, source_v, mask_v, scaled_v, head_v, query_v=None):
        """The button (and the API) show the last token up close; another head, mask, layer or token
        keeps the close-up on its token while the text still has it."""
        text_v = "" if text_v is None else str(text_v)
        try:
            return lab_outputs(text_v, source_v, mask_v, scaled_v, whole(head_v), kept_query(query_v))
        except NoSuchToken:  # a shorter text since, or another tokenizer: the last token
            return lab_outputs(text_v, source_v, mask_v, scaled_v, whole(head_v))

    inputs = [text, source, mask, scaled, head]
    outputs = [summary, saturation, *(plots[name] for name in STEP_ORDER), query]
    # preprocess=False: API values reach the handler as sent, so a head of "x" gets a sentence
    # instead of the slider's internal error; attention_lab checks source, mask and head itself
    listen(run.click, handler, inputs, outputs, api_name="attention_lab", preprocess=False)
    for control in (mask, scaled, head, query):
        listen(control.input, handler, [*inputs, query], outputs)
    # another layer: first its own range of heads, then the steps
    resized = listen(source.input, shows_errors(head_slider), [source, head], head)
    listen(resized.then, handler, [*inputs, query], outputs)

    efficiency.build()  # positional encoding, warmup schedule, efficiency: demos/efficiency.py
