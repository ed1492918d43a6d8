"""Attention Lab tab: the notes' attention, step by step, with real numbers and small matrices.

For a short text: embeddings plus positional encoding; Q = XW_Q, K = XW_K, V = XW_V; scores QK^T;
scaling by sqrt(d_k) (switch it off to watch the softmax saturate); the mask with its -inf
entries; softmax; the weighted sum of V; the split into heads, their concatenation and W_O.
Every number comes from a real `models.attention.MultiHeadAttention` (the first layer of the
generation or translation model when its checkpoint is there, else a seeded random one), and
`attention_lab` checks its result against that module's own forward pass.

Beside it: the sinusoidal positional encoding and its position-similarity matrix, the warmup
learning-rate schedule, and the efficiency view (time and memory of attention against length).
"""

from __future__ import annotations

import copy
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from bench import attention as attention_bench
from demos.attention_inputs import char_label
from demos.common import CORES, MissingCheckpoint, checkpoint_dir, get_model, has_checkpoint, zerogpu
from demos.plots import plot_labels, unique_labels
from models.analysis import attention_entropy
from models.attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention
from models.positional import SinusoidalPositionalEncoding, sinusoidal_table
from models.schedules import noam_lr

TITLE = "Attention Lab"
SOURCES = {
    "generation": "first layer of the text-generation GPT (characters)",
    "translation": "first encoder layer of the translation model (subwords)",
    "random": "a seeded random layer (d_model 64, 4 heads; words)",
}
MASKS = ("none", "causal", "padding")
MAX_TOKENS = 16  # matrices stay readable
PADS = 2  # padding positions appended to show the padding mask
SHOW_DIMS = 8  # columns shown of the wide matrices (d_model, d_k)
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


def lab_layer(source: str) -> LabLayer:
    """The first attention layer of `source` ('generation', 'translation' or 'random'), cached."""
    if source not in SOURCES:
        raise ValueError(f"Unknown layer {source!r}; choose one of {', '.join(SOURCES)}.")
    key = (source, str(checkpoint_dir(source)) if source != "random" else "")
    if key not in _LAYERS:
        builder = {"generation": _gpt_layer, "translation": _translation_layer, "random": _random_layer}[source]
        _LAYERS[key] = builder()
    return _LAYERS[key]


def _double(module: nn.Module | None) -> nn.Module | None:
    return None if module is None else copy.deepcopy(module).double().eval()


def _gpt_layer() -> LabLayer:
    model, tokenizer = get_model("generation")
    block = model.layers[0]
    embed = _double(model.embed)

    def tokenize(text: str) -> tuple[list[str], list[int]]:
        ids = tokenizer.encode(text)
        return [char_label(tokenizer.decode([i])) for i in ids], ids

    notes = []
    if model.config.positional == "rope":
        notes.append("This GPT adds no positional vector: RoPE rotates Q and K by position inside attention.")
    return LabLayer(
        "generation",
        tokenize,
        embed,
        _double(model.positional),
        _double(block.self_residual.norm) if block.self_residual.norm_first else None,
        _double(block.self_attn),
        pad_id=0,
        notes=notes,
    )


def _translation_layer() -> LabLayer:
    model, tokenizer = get_model("translation")
    block = model.encoder.layers[0]
    embed = _double(model.embed)
    scale = model.embed_scale

    def tokenize(text: str) -> tuple[list[str], list[int]]:
        ids = tokenizer.encode(text).ids
        return [tokenizer.id_to_token(i) for i in ids], ids

    return LabLayer(
        "translation",
        tokenize,
        lambda ids: embed(ids) * scale,  # the paper scales embeddings by sqrt(d_model)
        _double(model.positional),
        _double(block.attn_residual.norm) if block.attn_residual.norm_first else None,
        _double(block.self_attn),
        pad_id=model.config.pad_id,
    )


def _random_layer() -> LabLayer:
    """Each word's embedding is random but fixed (seeded by the word), the weights are
    N(0, 1/d_model): scores then have a variance that grows with d_k, as the notes describe, so
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


@dataclass
class LabResult:
    """Every intermediate of one self-attention layer on one text (float64; heads first)."""

    source: str
    labels: list[str]
    head: int  # the head the single-head steps show (0-based)
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
    raise ValueError(f"Unknown mask {kind!r}; choose one of {', '.join(MASKS)}.")


@torch.no_grad()
def attention_lab(
    text: str = EXAMPLE, source: str = "random", mask: str = "causal", scaled: bool = True, head: int = 1
) -> LabResult:
    """Run `source`'s first attention layer on `text` step by step; head is 1-based."""
    layer = lab_layer(source)
    if mask not in MASKS:
        raise ValueError(f"Unknown mask {mask!r}; choose one of {', '.join(MASKS)}.")
    labels, ids = layer.tokenize(text)
    notes = list(layer.notes)
    if not ids:
        raise ValueError("Type a few words: the layer's tokenizer found no token in this text.")
    if len(ids) > MAX_TOKENS:
        notes.append(f"Using the first {MAX_TOKENS} of {len(ids)} tokens, so the matrices stay readable.")
        labels, ids = labels[:MAX_TOKENS], ids[:MAX_TOKENS]
    is_token = torch.ones(len(ids), dtype=torch.bool)
    if mask == "padding":  # a batch pads shorter sentences; those keys must get no attention
        labels, ids = labels + ["<pad>"] * PADS, ids + [layer.pad_id] * PADS
        is_token = torch.cat([is_token, torch.zeros(PADS, dtype=torch.bool)])
    mha = layer.attention
    n_heads = mha.n_heads
    if not 1 <= head <= n_heads:
        raise ValueError(f"Head {head} does not exist: this layer has {n_heads} heads.")

    # 1. embeddings plus positional encoding
    embeddings = layer.embed(torch.tensor(ids))
    x = embeddings[None]
    positional = None
    if layer.positional is not None:
        x = layer.positional(x)
        positional = (x - embeddings[None])[0]
    x_attention = layer.norm(x) if layer.norm is not None else x
    # 2. Q = X W_Q, K = X W_K, V = X W_V, split into heads (the module's own projections)
    q, k, v = (mha.split_heads(proj(x_attention)) for proj in (mha.q_proj, mha.k_proj, mha.v_proj))
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
# Drawing the steps
# ----------------------------------------------------------------------------------------------


def _format(value: float) -> str:
    if math.isinf(value):
        return "-∞" if value < 0 else "∞"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def matrix_figure(
    values: Tensor | np.ndarray, rows: list[str], cols: list[str], title: str, probabilities: bool = False
) -> go.Figure:
    """A small matrix with its numbers written in the cells; -inf cells are grey and say -∞."""
    z = np.asarray(values, dtype=float)
    text = [[_format(v) for v in row] for row in z]
    finite = np.where(np.isfinite(z), z, np.nan)
    bound = float(np.nanmax(np.abs(finite))) if np.isfinite(finite).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=finite,
            x=plot_labels(cols),
            y=plot_labels(rows),
            text=text,
            texttemplate="%{text}",
            textfont={"size": 9},
            colorscale="Blues" if probabilities else "RdBu",
            zmin=0.0 if probabilities else -bound,
            zmax=1.0 if probabilities else bound,
            hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
            showscale=False,
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=120 + 22 * len(rows),
        margin={"l": 70, "r": 10, "t": 60, "b": 10},
        xaxis={"side": "top", "tickangle": -45},
        yaxis={"autorange": "reversed"},
        plot_bgcolor="#d9d9d9",  # masked (-inf) cells show through as grey
    )
    return fig


def _dims(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(min(n, SHOW_DIMS))]


def step_figures(r: LabResult) -> dict[str, go.Figure]:
    """One small figure per step of the notes, for head r.head."""
    h, labels = r.head, r.labels
    d, d_k = r.x.size(-1), r.q.size(-1)
    cut = f" (first {SHOW_DIMS} of {d} dims)" if d > SHOW_DIMS else ""
    cut_k = f" (first {SHOW_DIMS} of {d_k})" if d_k > SHOW_DIMS else ""
    figs = {
        "embeddings": matrix_figure(r.token_embeddings[:, :SHOW_DIMS], labels, _dims(d, "e"), "token embeddings" + cut),
        "x": matrix_figure(r.x_attention[:, :SHOW_DIMS], labels, _dims(d, "x"), _input_title(r) + cut),
    }
    if r.positional is not None:
        figs["positional"] = matrix_figure(r.positional[:, :SHOW_DIMS], labels, _dims(d, "p"), "+ positional" + cut)
    for name, m in (("q", r.q), ("k", r.k), ("v", r.v)):
        figs[name] = matrix_figure(
            m[h, :, :SHOW_DIMS], labels, _dims(d_k, name), f"{name.upper()}, head {h + 1}{cut_k}"
        )
    figs["scores"] = matrix_figure(r.scores[h], labels, labels, f"scores QKᵀ, head {h + 1}")
    scaled = "scaled by 1/√d_k = " + f"{r.scale:.3f}" if r.scaled else "NOT scaled (switch off)"
    figs["masked"] = matrix_figure(r.masked_scores[h], labels, labels, f"{scaled}, mask: {r.mask_kind}")
    figs["weights"] = matrix_figure(r.weights[h], labels, labels, "softmax (each row sums to 1)", probabilities=True)
    figs["head_output"] = matrix_figure(
        r.head_outputs[h, :, :SHOW_DIMS], labels, _dims(d_k, "o"), f"weights × V, head {h + 1}{cut_k}"
    )
    figs["heads"] = heads_figure(r)
    figs["concatenated"] = matrix_figure(
        r.concatenated[:, :SHOW_DIMS], labels, _dims(d, "c"), "Concat(head₁..head_h)" + cut
    )
    figs["output"] = matrix_figure(r.output[:, :SHOW_DIMS], labels, _dims(d, "y"), "× W_O = the layer's output" + cut)
    return figs


def _input_title(r: LabResult) -> str:
    if torch.equal(r.x, r.x_attention):
        return "X = embeddings + positions"
    return "LayerNorm(X): pre-norm attention reads this"


def heads_figure(r: LabResult) -> go.Figure:
    """All heads' weights side by side: the same tokens, different patterns."""
    n = r.weights.size(0)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"head {i + 1}" for i in range(n)], horizontal_spacing=0.02)
    for i in range(n):
        fig.add_trace(
            go.Heatmap(
                z=r.weights[i].numpy(),
                x=r.labels,
                y=r.labels,
                colorscale="Blues",
                zmin=0,
                zmax=1,
                showscale=False,
                hovertemplate="%{y} → %{x}: %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=i == 0, row=1, col=i + 1)
        fig.update_xaxes(showticklabels=False, row=1, col=i + 1)
    fig.update_layout(title="the split into heads: every head's softmax weights", height=300, margin={"t": 70})
    return fig


def saturation_table(r: LabResult) -> list[list]:
    """Per head: entropy and mean largest weight, with and without 1/sqrt(d_k)."""
    return [
        [
            i + 1,
            round(float(r.entropy["scaled"][i]), 3),
            round(float(r.max_weight["scaled"][i]), 3),
            round(float(r.entropy["unscaled"][i]), 3),
            round(float(r.max_weight["unscaled"][i]), 3),
        ]
        for i in range(r.weights.size(0))
    ]


SATURATION_HEADERS = ["head", "entropy scaled (bits)", "max weight scaled", "entropy unscaled", "max weight unscaled"]


def lab_summary(r: LabResult) -> str:
    t, d = r.x.shape
    h, d_k = r.q.shape[0], r.q.shape[-1]
    lines = [
        f"**{SOURCES[r.source]}**: {t} tokens, d_model = {d}, {h} heads of d_k = {d_k}.",
        f"Head {r.head + 1}: entropy {float(r.entropy['scaled'][r.head]):.2f} bits with scaling, "
        f"{float(r.entropy['unscaled'][r.head]):.2f} bits without (largest weight per row on average "
        f"{float(r.max_weight['scaled'][r.head]):.2f} vs {float(r.max_weight['unscaled'][r.head]):.2f}): "
        "without 1/√d_k the scores are √d_k times larger and the softmax saturates towards one key.",
    ]
    if r.scaled:
        lines.append(
            f"Check: `MultiHeadAttention.forward` on the same X gives the same output "
            f"(largest difference {r.reference_difference:.1e})."
        )
    return "\n\n".join(lines + r.notes)


# ----------------------------------------------------------------------------------------------
# Beside it: positional encoding, the warmup schedule, efficiency
# ----------------------------------------------------------------------------------------------


def positional_figures(max_len: int = 64, d_model: int = 128) -> tuple[go.Figure, go.Figure]:
    """The sinusoidal table (position x dimension) and PE PE^T (position x position)."""
    table = sinusoidal_table(int(max_len), int(d_model)).double()
    pe = go.Figure(
        go.Heatmap(
            z=table.numpy(),
            colorscale="RdBu",
            zmid=0,
            hovertemplate="position %{y}, dim %{x}: %{z:.3f}<extra></extra>",
        )
    )
    pe.update_layout(
        title="sinusoidal PE: low dims turn fast, high dims slowly",
        xaxis_title="dimension",
        yaxis={"title": "position", "autorange": "reversed"},
        height=420,
    )
    similarity = (table @ table.T).numpy()
    sim = go.Figure(
        go.Heatmap(z=similarity, colorscale="Viridis", hovertemplate="PE(%{y}) · PE(%{x}) = %{z:.2f}<extra></extra>")
    )
    sim.update_layout(
        title="PE PEᵀ: similarity depends on the distance only",
        xaxis_title="position",
        yaxis={"title": "position", "autorange": "reversed"},
        height=420,
    )
    return pe, sim


def schedule_figure(d_model: int = 512, warmup: int = 4000, steps: int = 20000) -> go.Figure:
    """The paper's LR = d_model^-0.5 min(step^-0.5, step warmup^-1.5)."""
    d_model, warmup, steps = int(d_model), int(warmup), int(steps)
    if min(d_model, warmup, steps) < 1:
        raise ValueError("d_model, warmup and steps must be positive.")
    x = np.unique(np.linspace(1, steps, 400).astype(int))
    y = [noam_lr(int(s), d_model, warmup) for s in x]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", hovertemplate="step %{x}: lr %{y:.2e}<extra></extra>"))
    fig.add_vline(
        x=warmup, line_dash="dot", annotation_text=f"warmup ends, peak {noam_lr(warmup, d_model, warmup):.2e}"
    )
    fig.update_layout(
        title=f"warmup schedule, d_model {d_model}, warmup {warmup}",
        xaxis_title="step",
        yaxis_title="learning rate",
        height=360,
    )
    return fig


LIVE_SIZES = (64, 128, 256, 512, 1024)


def measure_live(sizes=LIVE_SIZES, repeats: int = 3) -> list[dict]:
    """Time each kind of attention on this CPU now (bench/attention.py's settings, time only)."""
    return [
        {"kind": kind, "n": n, "time_ms": attention_bench.time_attention(kind, n, repeats=repeats), "peak_mib": None}
        for n in sizes
        for kind in attention_bench.KINDS
    ]


COLORS = {"explicit": "#d62728", "fused": "#1f77b4", "window": "#2ca02c", "linear": "#9467bd"}


def efficiency_figure(live: list[dict] | None = None, stored: list[dict] | None = None) -> go.Figure:
    """Time and peak memory against sequence length, log-log: the live CPU run (solid) and the
    stored bench results (dashed, one style per file), with n and n^2 guides."""
    stored = attention_bench.load_results(attention_bench.RESULTS_DIR) if stored is None else stored
    fig = make_subplots(rows=1, cols=2, subplot_titles=["time per forward (ms)", "peak extra memory (MiB)"])
    dashes = ["dash", "dot", "dashdot", "longdash"]
    series = [("live CPU, now", live or [], "solid")]
    series += [(attention_bench.describe(r), r["points"], dashes[i % 4]) for i, r in enumerate(stored)]
    for name, points, dash in series:
        for kind in attention_bench.KINDS:
            pts = sorted((p for p in points if p["kind"] == kind), key=lambda p: p["n"])
            for col, key in ((1, "time_ms"), (2, "peak_mib")):
                xy = [(p["n"], p[key]) for p in pts if p.get(key)]
                if not xy:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[a for a, _ in xy],
                        y=[b for _, b in xy],
                        mode="lines+markers",
                        line={"color": COLORS[kind], "dash": dash},
                        name=f"{kind}, {name}",
                        legendgroup=f"{kind}{name}",
                        showlegend=col == 1 or key == "peak_mib" and not any(p.get("time_ms") for p in pts),
                        hovertemplate=f"{kind}, {name}<br>n = %{{x}}<br>%{{y:.3g}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
    _add_guides(fig, [p for _, points, _ in series for p in points])
    fig.update_xaxes(type="log", title_text="sequence length n")
    fig.update_yaxes(type="log")
    fig.update_layout(height=460, legend={"font": {"size": 10}}, margin={"t": 60})
    return fig


def _add_guides(fig: go.Figure, points: list[dict]) -> None:
    """Grey lines through the first explicit point with slopes 1 and 2: O(n) and O(n^2)."""
    for col, key in ((1, "time_ms"), (2, "peak_mib")):
        anchors = sorted((p["n"], p[key]) for p in points if p["kind"] == "explicit" and p.get(key))
        if not anchors:
            continue
        n0, y0 = anchors[len(anchors) // 2]
        xs = np.array([64, 4096])
        for power, label in ((1, "∝ n"), (2, "∝ n²")):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=y0 * (xs / n0) ** power,
                    mode="lines",
                    line={"color": "#aaaaaa", "width": 1, "dash": "dot"},
                    name=label,
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
            fig.add_annotation(
                x=math.log10(4096),
                y=math.log10(y0 * (4096 / n0) ** power),
                text=label,
                showarrow=False,
                xanchor="left",
                row=1,
                col=col,
            )


STORED_HEADERS = ["run", "n"] + [f"{k} ms" for k in attention_bench.KINDS] + [f"{k} MiB" for k in attention_bench.KINDS]


def stored_table() -> list[list]:
    """One row per stored run and sequence length: time and memory of each kind (STORED_HEADERS)."""
    rows = []
    for r in attention_bench.load_results(attention_bench.RESULTS_DIR):
        by = {(p["kind"], p["n"]): p for p in r["points"]}
        for n in sorted({p["n"] for p in r["points"]}):
            cells = [by.get((k, n), {}) for k in attention_bench.KINDS]
            rows.append(
                [attention_bench.describe(r), n]
                + [c.get("time_ms") for c in cells]
                + [c.get("peak_mib") for c in cells]
            )
    return rows


# ----------------------------------------------------------------------------------------------
# The tab
# ----------------------------------------------------------------------------------------------

STEP_ORDER = (
    "embeddings",
    "positional",
    "x",
    "q",
    "k",
    "v",
    "scores",
    "masked",
    "weights",
    "head_output",
    "heads",
    "concatenated",
    "output",
)


def _empty(title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=160, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def whole(value) -> int:
    """A head number from a slider or an API caller: a whole number, or a ValueError that says so."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise ValueError(f"The head must be a whole number, not {value!r}.")
    return int(number)


def lab_outputs(text: str, source: str, mask: str, scaled: bool, head: int) -> tuple:
    """What the tab shows: summary, saturation table, then one figure per step (STEP_ORDER)."""
    result = attention_lab(text, source, mask, bool(scaled), int(head))
    figs = step_figures(result)
    figs.setdefault("positional", _empty("no PE added: RoPE rotates Q and K"))
    table = {"headers": SATURATION_HEADERS, "data": saturation_table(result)}
    return (lab_summary(result), table, *(figs[name] for name in STEP_ORDER))


def build() -> None:
    sources = available_sources()
    default = sources[0]
    gr.Markdown(
        "The attention formula of the notes, **softmax(QKᵀ/√d_k)·V**, on your text, with the real weights "
        "of a layer. Wide matrices show their first columns; hover for values. "
        + ("" if len(sources) == 3 else "Without the generation/translation checkpoints only the random layer is here.")
    )
    with gr.Row():
        text = gr.Textbox(EXAMPLE, label="a short text", scale=3)
        source = gr.Radio(sources, value=default, label="layer")
    with gr.Row():
        mask = gr.Radio(list(MASKS), value="causal", label="mask")
        scaled = gr.Checkbox(True, label="divide the scores by √d_k")
        head = gr.Slider(1, 16, value=1, step=1, label="head")
        run = gr.Button("Run the steps", variant="primary")
    summary = gr.Markdown()
    saturation = gr.Dataframe(label="softmax saturation per head", headers=SATURATION_HEADERS)
    plots: dict[str, gr.Plot] = {}
    sections = (
        ("1. Embeddings plus positional encoding: X", ("embeddings", "positional", "x")),
        ("2. Q = XW_Q, K = XW_K, V = XW_V (one head's slice)", ("q", "k", "v")),
        ("3. Scores QKᵀ, scaling by √d_k and the mask", ("scores", "masked")),
        ("4. Softmax and the weighted sum of V", ("weights", "head_output")),
        ("5. All heads, their concatenation and W_O", ("heads",)),
        ("", ("concatenated", "output")),
    )
    for title, names in sections:
        if title:
            gr.Markdown(f"### {title}")
        with gr.Row():
            for name in names:
                plots[name] = gr.Plot(show_label=False)

    @zerogpu  # ZeroGPU needs one decorated handler (demos/common.py says why this one)
    def handler(text_v, source_v, mask_v, scaled_v, head_v):
        try:
            return lab_outputs("" if text_v is None else str(text_v), source_v, mask_v, scaled_v, whole(head_v))
        except (MissingCheckpoint, ValueError) as error:
            raise gr.Error(str(error)) from None

    inputs = [text, source, mask, scaled, head]
    outputs = [summary, saturation, *(plots[name] for name in STEP_ORDER)]
    # preprocess=False: API values reach the handler as sent, so a head of "x" gets a sentence
    # instead of the slider's internal error; attention_lab checks source, mask and head itself
    run.click(handler, inputs, outputs, api_name="attention_lab", preprocess=False, concurrency_id=CORES)
    for control in (source, mask, scaled, head):
        control.input(handler, inputs, outputs, api_visibility="private", concurrency_id=CORES)

    with gr.Accordion("Positional encoding", open=False):
        with gr.Row():
            max_len = gr.Slider(8, 256, value=64, step=1, label="positions")
            d_model = gr.Slider(8, 512, value=128, step=2, label="d_model")
        with gr.Row():
            pe_plot, sim_plot = (gr.Plot(value=f, show_label=False) for f in positional_figures())
        for control in (max_len, d_model):
            control.change(
                positional_figures,
                [max_len, d_model],
                [pe_plot, sim_plot],
                api_visibility="private",
                concurrency_id=CORES,
            )

    with gr.Accordion("Warmup learning-rate schedule", open=False):
        with gr.Row():
            sched_d = gr.Number(512, label="d_model", precision=0, minimum=1)
            sched_w = gr.Number(4000, label="warmup steps", precision=0, minimum=1)
            sched_n = gr.Number(20000, label="steps shown", precision=0, minimum=1)
        sched_plot = gr.Plot(value=schedule_figure(), show_label=False)

        def schedule(d, w, n):
            try:
                return schedule_figure(d, w, n)
            except (TypeError, ValueError):
                raise gr.Error("d_model, warmup and steps must be positive whole numbers.") from None

        for control in (sched_d, sched_w, sched_n):
            control.change(
                schedule, [sched_d, sched_w, sched_n], sched_plot, api_visibility="private", concurrency_id=CORES
            )

    with gr.Accordion("Efficiency: attention is O(n²)", open=False):
        gr.Markdown(
            "Time and extra memory of one attention forward pass (batch 1, 8 heads, d_k 64) against sequence "
            "length: explicit softmax(QKᵀ)V keeps the n×n matrix, the fused kernel does not, a sliding window "
            "(128 keys) and linear attention grow as n. Dashed: stored runs of `python -m bench.attention` "
            "(bench/results/); solid: this CPU, now (time only, n ≤ 1024)."
        )
        measure = gr.Button("Measure on this CPU now (a few seconds)")
        efficiency = gr.Plot(value=efficiency_figure(), show_label=False)
        gr.Dataframe(value=stored_table() or None, headers=STORED_HEADERS, label="stored results")
        measure.click(
            lambda: efficiency_figure(measure_live()), None, efficiency, api_visibility="private", concurrency_id=CORES
        )
