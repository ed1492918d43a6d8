"""What the Forward Pass tab says and draws at each step: a few sentences with the real numbers,
a small matrix (the first dimensions) and one figure, for the chosen position."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
import torch

from demos import forward_views as views
from models.blocks import ACTIVATION_EFFECTS, ACTIVATION_NAMES
from models.introspect import AttentionTrace, FeedForwardTrace

if TYPE_CHECKING:
    from demos.forward_pass import Walkthrough

HEAD_DIMS = 6  # per-head columns in the Q, K, V table


def step_view(walk: Walkthrough, step: views.Step) -> tuple[str, go.Figure]:
    """(markdown, figure) for one step of the walkthrough."""
    return STEPS[step.key](walk, step)


def _where(walk: Walkthrough) -> str:
    return f"{walk.position} (`{walk.labels[walk.position]}`)"


def _embed(walk: Walkthrough, step: views.Step):
    t, p = walk.trace, walk.position
    token = t.tokens[p]
    scaled = walk.task == "translation"
    rows = [("E[token]" + (" × √d_model" if scaled else ""), t.token_embedding[p])]
    if t.position_embedding is not None:
        rows.append((f"{t.positional} position {p}", t.position_embedding[p]))
    rows.append(("x₀ into layer 1", t.embedded[p]))
    if t.positional == "rope":
        how = (
            "This model adds **no position vector**: RoPE rotates every query and key by an angle that "
            "grows with the position, inside each attention (the Q, K, V step), so attention scores "
            "depend on how far apart two tokens are."
        )
    elif t.position_embedding is None:
        how = "This model has no positional encoding."
    else:
        how = (
            f"A {t.positional} position vector is **added** to the embedding, so the same token reads "
            "differently at each position."
        )
    text = (
        f"### {step.title}\nPosition {_where(walk)} is token id **{token}**. Its embedding is row {token} of the "
        f"embedding matrix ({t.embedded.size(-1)} numbers; the first {views.SHOW_DIMS} shown). {how}\n\n"
        + views.vector_table(rows)
    )
    return text, views.vectors_figure(rows, "The vectors entering the first block")


def _norm_numbers(x: torch.Tensor, out: torch.Tensor, gamma, beta, title: str) -> tuple[str, go.Figure]:
    mean, std = float(x.mean()), float(x.var(unbiased=False).add(1e-5).sqrt())
    rows = [("x", x), ("(x − μ) / σ", (x - mean) / std), ("γ", gamma), ("β", beta), ("LayerNorm(x)", out)]
    text = (
        f"### {title}\nLayerNorm(x) = (x − μ)/σ · γ + β over this position's own {x.numel()} numbers: "
        f"μ = {mean:.3f}, σ = {std:.3f}. It keeps the scale of what the sub-layer reads steady, "
        f"whatever has piled up in the residual stream (‖x‖ = {views.norm(x):.2f}, ‖LayerNorm(x)‖ = "
        f"{views.norm(out):.2f}).\n\n" + views.vector_table(rows)
    )
    return text, views.vectors_figure([("x", x), ("LayerNorm(x)", out)], "Before and after LayerNorm")


def _norm(walk: Walkthrough, step: views.Step):
    sub = walk.trace.layers[step.layer][step.sub]
    p = walk.position
    return _norm_numbers(sub.before[p], sub.reads[p], sub.norm_weight, sub.norm_bias, step.title)


def _qkv(walk: Walkthrough, step: views.Step):
    sub: AttentionTrace = walk.trace.layers[step.layer][step.sub]
    p, heads, d_k = walk.position, sub.q.size(0), sub.q.size(-1)
    q = sub.q_rotated if sub.q_rotated is not None else sub.q
    cross = sub.kind.startswith("cross")
    rows = [(f"q, head {h + 1}", q[h, p]) for h in range(heads)]
    if sub.q_rotated is not None:  # the same query before the turn, to compare with the first row
        rows.insert(0, ("q, head 1, before RoPE", sub.q[0, p]))
    if cross:
        keys = walk.source_labels or []
        rows += [(f"k of `{keys[s]}` (head 1)", sub.k[0, s]) for s in range(min(3, sub.k.size(1)))]
        source = "the **encoder's output** (the source sentence), the same for every target position"
    else:
        k = sub.k_rotated if sub.k_rotated is not None else sub.k
        rows += [(f"k, head {h + 1}", k[h, p]) for h in range(min(2, heads))]
        rows += [(f"v, head {h + 1}", sub.v[h, p]) for h in range(min(2, heads))]
        source = "the same LayerNorm output, at every position up to this one"
    qk_norm = (
        " Then **QK-norm**: each head's q and k are divided by their root mean square and multiplied by a "
        "learned gain, so no score can grow without bound (the rows show them after it)."
        if sub.qk_norm
        else ""
    )
    rope = (
        " Then **RoPE** turns each pair of dimensions of q and k by an angle proportional to the position "
        "(the rows show q and k after the turn)."
        if sub.q_rotated is not None
        else ""
    )
    text = (
        f"### {step.title}\nQ = LayerNorm(x) W_Q, one {sub.q.size(-1) * heads}-number vector split into "
        f"{heads} heads of d_k = {d_k}. K and V come from {source}.{qk_norm}{rope}\n\n"
        + views.vector_table(rows, HEAD_DIMS)
    )
    fig = go.Figure(go.Heatmap(z=q[:, p].numpy(), y=[f"head {h + 1}" for h in range(heads)], colorscale="RdBu", zmid=0))
    fig.update_layout(
        title=f"q at position {walk.position}, every head (x: the d_k = {d_k} dims)",
        yaxis={"autorange": "reversed"},
        height=260,
        margin={"l": 60, "r": 10, "t": 50, "b": 30},
    )
    return text, fig


def _attention(walk: Walkthrough, step: views.Step):
    sub: AttentionTrace = walk.trace.layers[step.layer][step.sub]
    p = walk.position
    cross = sub.kind.startswith("cross")
    keys = (walk.source_labels if cross else walk.labels[: p + 1]) or []
    weights = sub.weights[:, p, : len(keys)]
    lines = [f"- head {h + 1}: " + views.top_pairs(weights[h].numpy(), keys) for h in range(min(weights.size(0), 8))]
    hidden = (
        "" if cross else f" The causal mask sets the scores of the {len(walk.labels) - p - 1} later positions to −∞."
    )
    text = (
        f"### {step.title}\nEach head scores every key: softmax(q·k / √d_k) gives weights that sum to 1; the head's "
        f"output is the weighted sum of the values.{hidden} Most attended keys (position:`token` weight):\n\n"
        + "\n".join(lines)
        + "\n\nThe heads' outputs are concatenated and mixed by W_O:\n\n"
        + views.vector_table([("heads concatenated", sub.heads[p]), ("× W_O = output", sub.output[p])])
    )
    return text, views.heads_figure(weights, keys, _where(walk), step.title)


def _add(walk: Walkthrough, step: views.Step):
    sub = walk.trace.layers[step.layer][step.sub]
    p = walk.position
    before, out, after = sub.before[p], sub.output[p], sub.after[p]
    cosine = float(torch.nn.functional.cosine_similarity(before, out, dim=0))
    rule = "x + sublayer(LayerNorm(x))" if sub.norm_first else "LayerNorm(x + sublayer(x))"
    text = (
        f"### {step.title}\nThe {sub.kind} output is **added** to the residual stream: {rule}. The stream is "
        f"a running sum every sub-layer reads from and writes into. Here ‖x‖ = {views.norm(before):.2f}, "
        f"‖added‖ = {views.norm(out):.2f} (cosine with x: {cosine:+.2f}), ‖x after‖ = {views.norm(after):.2f}.\n\n"
        + views.vector_table([("x (the stream)", before), (f"+ {sub.kind}", out), ("= x after", after)])
    )
    return text, views.vectors_figure([("x", before), ("added", out), ("x after", after)], step.title)


def _ffn(walk: Walkthrough, step: views.Step):
    sub: FeedForwardTrace = walk.trace.layers[step.layer][step.sub]
    p = walk.position
    hidden, active = sub.hidden[p], sub.activated[p]
    on = int((active > 0).sum())
    top = torch.topk(active, 5).indices.tolist()
    text = (
        f"### {step.title}\nThe same two-layer network runs at every position on its own: W₁ widens "
        f"{sub.reads.size(-1)} numbers to {hidden.numel()}, the {ACTIVATION_NAMES[sub.activation]} "
        f"{ACTIVATION_EFFECTS[sub.activation]}, W₂ brings them back to {sub.output.size(-1)}. "
        f"Here {on} of {hidden.numel()} hidden units are positive; the strongest: "
        + ", ".join(f"unit {u} ({float(active[u]):.2f})" for u in top)
        + ".\n\n"
        + views.vector_table(
            [
                ("LayerNorm(x)", sub.reads[p]),
                ("W₁x + b₁", hidden),
                ("activation", active),
                ("W₂ · = output", sub.output[p]),
            ]
        )
    )
    return text, views.activation_figure(sub, p)


def _final_norm(walk: Walkthrough, step: views.Step):
    t, p = walk.trace, walk.position
    d = t.final_hidden.size(-1)
    gamma = t.final_norm_weight if t.final_norm_weight is not None else torch.ones(d)
    beta = t.final_norm_bias if t.final_norm_bias is not None else torch.zeros(d)
    return _norm_numbers(t.final_hidden[p], t.final_normed[p], gamma, beta, step.title)


def _logits(walk: Walkthrough, step: views.Step):
    logits = walk.trace.logits[walk.position]
    top = logits.topk(min(views.TOP_N, logits.numel()))
    listing = ", ".join(f"`{walk.label(int(i))}` {float(v):.2f}" for v, i in zip(top.values, top.indices, strict=True))
    text = (
        f"### {step.title}\nThe head multiplies the normalised vector by the (tied) embedding matrix: one score per "
        f"token of the {logits.numel()}-token vocabulary. Highest: {listing}."
    )
    fig = views.probability_figure([("logit", logits)], walk.label, "The highest logits", ylabel="logit")
    return text, fig


def _temperature(walk: Walkthrough, step: views.Step):
    plain = walk.trace.logits[walk.position].softmax(-1)
    if walk.temperature <= 0:
        how = "Temperature 0 means **greedy**: all probability goes to the highest logit."
    else:
        how = (
            f"softmax(logits / T) with T = {walk.temperature:g}: below 1 it sharpens the distribution, above 1 it "
            "flattens it."
        )
    best = int(walk.tempered.argmax())
    text = (
        f"### {step.title}\n{how} The top token `{walk.label(best)}` goes from {float(plain[best]):.1%} (T = 1) to "
        f"{float(walk.tempered[best]):.1%}."
    )
    series = [("T = 1", plain), (f"T = {walk.temperature:g}", walk.tempered)]
    return text, views.probability_figure(series, walk.label, "Probabilities before and after the temperature")


def _cut(walk: Walkthrough, step: views.Step):
    kept = int((walk.probs > 0).sum())
    k = "off" if walk.top_k is None else str(walk.top_k)
    p = "off" if walk.top_p is None else f"{walk.top_p:g}"
    text = (
        f"### {step.title}\nTop-k keeps the k most likely tokens (k: {k}); top-p keeps the fewest whose probability "
        f"adds up to p (p: {p}). What is left is renormalised: **{kept}** of {walk.probs.numel()} tokens can still be "
        "drawn (models.decoding.filter_logits, as the sampler does)."
    )
    series = [("after the temperature", walk.tempered), ("after the cut", walk.probs)]
    return text, views.probability_figure(series, walk.label, "The distribution the sampler draws from")


def _sample(walk: Walkthrough, step: views.Step):
    drawn = walk.sampled
    if walk.next_token is None:
        real = "This was the last position: the drawn token is where the text would go on."
    else:
        real = f"In the text, `{walk.label(walk.next_token)}` comes next."
    text = (
        f"### {step.title}\nmodels.decoding.sample, seeded with {walk.seed}, drew **`{walk.label(drawn)}`** "
        f"(probability {float(walk.probs[drawn]):.1%}). {real} The drawn token is appended "
        "and the whole pass runs again for the next position (with a KV cache, only for the new token)."
    )
    fig = views.probability_figure([("probability", walk.probs)], walk.label, "The draw", highlight=drawn)
    return text, fig


STEPS = {
    "embed": _embed,
    "norm": _norm,
    "qkv": _qkv,
    "attention": _attention,
    "add": _add,
    "ffn": _ffn,
    "final_norm": _final_norm,
    "logits": _logits,
    "temperature": _temperature,
    "cut": _cut,
    "sample": _sample,
}
