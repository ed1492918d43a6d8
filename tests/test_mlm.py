"""The fill-mask BERT: BERT's 80/10/10 masking, the MLM loss against a hand-computed cross-entropy,
training end to end on made-up captions (train, export, evaluate), the Fill-Mask tab's functions
and bad inputs, the three families side by side, and the endpoints through gradio_client."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.bert import (
    CLS_ID,
    IGNORE_INDEX,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    Bert,
    BertConfig,
    mask_tokens,
    mlm_loss,
    train_wordpiece,
)
from models.checkpoint import load_model
from tests.app_server import ROOT

N_SPECIAL = len(SPECIAL_TOKENS)
CHECKPOINT = ROOT / "checkpoints" / "mlm"

ADJECTIVES = ["young", "old", "happy", "tired", "small"]
NOUNS = ["man", "woman", "dog", "girl", "boy"]
VERBS = ["riding a bike", "playing a guitar", "reading a book", "eating an apple"]
PLACES = ["street", "park", "garden", "kitchen"]


def write_captions(folder: Path, sizes=(("train", 400), ("val", 40), ("test_2016_flickr", 40))) -> Path:
    """English captions in Multi30k's layout ({split}.en.gz), some with stray spaces as upstream."""
    combos = [f"A {a} {n} is {v} in the {p}." for a, n, v, p in itertools.product(ADJECTIVES, NOUNS, VERBS, PLACES)]
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        lines = [f" {rng.choice(combos)} \n" if i % 9 == 0 else f"{rng.choice(combos)}\n" for i in range(n)]
        with gzip.open(folder / f"{split}.en.gz", "wt", encoding="utf-8") as f:
            f.writelines(lines)
    return folder


def tiny_bert(vocab_size: int = 60, dropout: float = 0.0) -> Bert:
    torch.manual_seed(0)
    return Bert(
        BertConfig(vocab_size=vocab_size, max_len=16, n_layers=2, n_heads=2, d_model=32, d_ff=64, dropout=dropout)
    )


def caption_batch(rows: int = 2000, length: int = 24, vocab_size: int = 1000, seed: int = 0) -> torch.Tensor:
    """[CLS] words [SEP] [PAD]... rows of different lengths, words drawn from the ordinary ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, vocab_size, (rows, length), generator=g)
    lengths = torch.randint(4, length - 1, (rows,), generator=g)
    for row, n in enumerate(lengths.tolist()):
        ids[row, 0] = CLS_ID
        ids[row, n + 1] = SEP_ID
        ids[row, n + 2 :] = PAD_ID
    return ids


# ----------------------------------------------------------------------------------------------
# Masking: 15%, 80/10/10, never a special token
# ----------------------------------------------------------------------------------------------


def test_masking_rate_and_the_80_10_10_rule():
    vocab_size = 1000
    ids = caption_batch(vocab_size=vocab_size)
    inputs, labels = mask_tokens(ids, vocab_size, 0.15, torch.Generator().manual_seed(1))
    eligible = ids >= N_SPECIAL
    chosen = labels != IGNORE_INDEX
    n_eligible, n_chosen = int(eligible.sum()), int(chosen.sum())
    # ~27k eligible tokens: the binomial's standard deviation of the rate is ~0.002
    assert abs(n_chosen / n_eligible - 0.15) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original tokens
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else is touched
    masked = chosen & (inputs == MASK_ID)
    kept = chosen & (inputs == ids)
    replaced = chosen & (inputs != ids) & (inputs != MASK_ID)
    assert int(masked.sum() + kept.sum() + replaced.sum()) == n_chosen
    # a random replacement equals the original with probability 1/995: counted as "kept"
    assert abs(int(masked.sum()) / n_chosen - 0.8) < 0.025
    assert abs(int(replaced.sum()) / n_chosen - 0.1) < 0.02
    assert abs(int(kept.sum()) / n_chosen - 0.1) < 0.02
    assert bool((inputs[replaced] >= N_SPECIAL).all())  # random tokens are ordinary words
    assert len(set(inputs[replaced].tolist())) > 100  # ... drawn from the whole vocabulary


def test_special_tokens_are_never_masked():
    ids = caption_batch(rows=500)
    ids[:, 5] = MASK_ID  # even a [MASK] already in the input is not a target
    inputs, labels = mask_tokens(ids, 1000, rate=0.9, generator=torch.Generator().manual_seed(2))
    special = ids < N_SPECIAL
    assert bool((labels[special] == IGNORE_INDEX).all())
    assert torch.equal(inputs[special], ids[special])
    assert int((labels != IGNORE_INDEX).sum()) > 0.85 * int((~special).sum())  # the rate is honoured


def test_masking_with_a_seed_is_repeatable():
    ids = caption_batch(rows=50)
    a = mask_tokens(ids, 1000, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, 1000, generator=torch.Generator().manual_seed(3))
    c = mask_tokens(ids, 1000, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


# ----------------------------------------------------------------------------------------------
# The loss and the model
# ----------------------------------------------------------------------------------------------


def test_mlm_loss_is_cross_entropy_on_the_masked_positions_only():
    model = tiny_bert().eval()
    ids = caption_batch(rows=6, length=12, vocab_size=60, seed=5)
    inputs, labels = mask_tokens(ids, 60, 0.3, torch.Generator().manual_seed(6))
    with torch.no_grad():
        logits = model(inputs).logits
    total, count = 0.0, 0
    for b, t in (labels != IGNORE_INDEX).nonzero().tolist():
        row = logits[b, t].double()
        total += float(torch.logsumexp(row, 0) - row[labels[b, t]])  # -log softmax of the right token
        count += 1
    assert count > 3
    assert float(mlm_loss(model, inputs, labels)) == pytest.approx(total / count, rel=1e-5)
    # the GPU's way (every position through the head, the others ignored) gives the same number
    assert float(mlm_loss(model, inputs, labels, select=False)) == pytest.approx(total / count, rel=1e-5)
    # changing a label at an unmasked position changes nothing
    assert labels[0, 0] == IGNORE_INDEX
    inputs[0, 0] = CLS_ID
    assert float(mlm_loss(model, inputs, labels)) == pytest.approx(total / count, rel=1e-5)


def test_head_is_tied_to_the_embeddings_and_attention_sees_both_ways():
    model = tiny_bert().eval()
    hidden = torch.randn(3, 32)
    transformed = model.head_norm(F.gelu(model.head_dense(hidden)))
    expected = transformed @ model.embed.weight.T + model.head_bias  # scores against the input embeddings
    assert torch.allclose(model.mlm_logits(hidden), expected, atol=1e-5)
    assert model.embed.weight.data_ptr() not in [p.data_ptr() for n, p in model.named_parameters() if "head" in n]
    ids = torch.tensor([[CLS_ID, 10, 11, MASK_ID, 12, SEP_ID]])
    run = model.attention(ids, [str(i) for i in ids[0].tolist()])
    weights = run["encoder self"].weights
    assert weights.shape == (2, 2, 6, 6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 6))
    assert float(weights.triu(1).sum()) > 0.5  # tokens attend to later tokens too (not causal)
    # the blank's prediction depends on a word to its right: bidirectional
    changed = ids.clone()
    changed[0, 4] = 13
    assert not torch.allclose(model(ids).logits[0, 3], model(changed).logits[0, 3])


def test_padding_changes_no_prediction():
    model = tiny_bert().eval()
    ids = torch.tensor([[CLS_ID, 10, MASK_ID, 12, SEP_ID]])
    padded = torch.cat([ids, torch.full((1, 3), PAD_ID)], dim=1)
    assert torch.allclose(model(ids).logits[0], model(padded).logits[0, :5], atol=1e-5)


def test_wordpiece_vocabulary_reads_mask_and_adds_cls_sep():
    tokenizer = train_wordpiece([f"A {n} is {v}." for n in NOUNS for v in VERBS] * 5, 120)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == i
    encoding = tokenizer.encode("A Dog is [MASK] a bike.")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert encoding.tokens[1:3] == ["a", "dog"]  # lower-cased
    assert encoding.ids.count(MASK_ID) == 1


def test_training_lowers_the_loss_on_a_fixed_masked_batch():
    model = tiny_bert(dropout=0.0)
    ids = caption_batch(rows=32, length=12, vocab_size=60, seed=7)
    inputs, labels = mask_tokens(ids, 60, 0.3, torch.Generator().manual_seed(8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = float(mlm_loss(model, inputs, labels))
    assert first == pytest.approx(math.log(60), rel=0.1)  # an untrained model is near uniform
    for _ in range(60):
        optimizer.zero_grad()
        loss = mlm_loss(model, inputs, labels)
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.5 * first


@pytest.mark.slow
def test_train_export_and_evaluate_end_to_end(tmp_path):
    """training.train on made-up captions, then training.evaluate on the exported checkpoint."""
    from training import evaluate, train

    data = write_captions(tmp_path / "multi30k")
    out = tmp_path / "checkpoint"
    overrides = [
        "model={max_len: 24, n_layers: 2, n_heads: 2, d_model: 32, d_ff: 64, dropout: 0.0}",
        "vocab_size=80",
        "max_steps=150",
        "val_every=50",
        "batch_size=32",
        "lr=0.005",
        "warmup_steps=10",
        "max_time_s=null",
    ]
    argv = ["mlm", "--data-dir", str(tmp_path), "--out", str(out), "--log-dir", str(tmp_path / "runs")]
    summary = train.main([*argv, "--set", *overrides])
    assert summary["steps"] == 150
    log = [json.loads(line) for line in (tmp_path / "runs" / "mlm" / "validation.jsonl").read_text().splitlines()]
    assert log[-1]["val/loss"] < log[0]["val/loss"]
    model = load_model(out)
    assert model.architecture == "bert" and model.embed.weight.dtype == torch.float32
    metrics = evaluate.main(["mlm", "--checkpoint", str(out), "--data-dir", str(data)])
    assert metrics["split"] == "test_2016_flickr" and metrics["masked"] > 20
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    # the captions repeat a small grammar: far better than the 1-in-80 of guessing
    assert metrics["top1"] > 0.3
    again = evaluate.main(["mlm", "--checkpoint", str(out), "--data-dir", str(data)])
    assert again == metrics  # the masking is seeded


def test_a_run_from_a_checkpoint_keeps_its_vocabulary_and_weights(tmp_path):
    """init_from: the checkpoint's own WordPiece ids, not a newly trained vocabulary's (whose ids
    differ from run to run), and its weights."""
    from models.tokenizers import load_tokenizer
    from training import mlm
    from training.common import export, start_from_checkpoint

    write_captions(tmp_path / "multi30k")
    size = dict(max_len=16, n_layers=2, n_heads=2, d_model=32, d_ff=64, dropout=0.0)
    torch.manual_seed(0)
    first, _ = mlm.build(mlm.Config(model=dict(size), vocab_size=80), tmp_path)
    first.tokenizer = train_wordpiece(["a cat sat on the mat", "two dogs ran in the snow"] * 50, 40)
    first.model = Bert(BertConfig(vocab_size=first.tokenizer.get_vocab_size(), **size))  # fits that vocabulary
    checkpoint = export(first, tmp_path / "first", meta={})

    module, data = mlm.build(mlm.Config(model=dict(size), vocab_size=80, init_from=str(checkpoint)), tmp_path)
    start_from_checkpoint(module, checkpoint)
    assert module.tokenizer.to_str() == data.tokenizer.to_str() == load_tokenizer(checkpoint).to_str()
    assert torch.equal(module.model.embed.weight, load_model(checkpoint).embed.weight)


# ----------------------------------------------------------------------------------------------
# The Fill-Mask tab (the shipped checkpoint)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tab():
    if not (CHECKPOINT / "model.safetensors").exists():
        pytest.skip(f"the shipped fill-mask checkpoint is not in {CHECKPOINT}")
    from demos import fill_mask as tab

    return tab


def test_fill_mask_gives_ranked_candidates_from_the_model(tab):
    from demos.common import get_model

    result = tab.fill_mask("A man is [MASK] a bike.", 5)
    assert len(result.blanks) == 1 and len(result.blanks[0]) == 5
    probs = [p for _, p in result.blanks[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert "[MASK]" not in result.text
    # the same answer as the model's own softmax at the blank
    model, tokenizer = get_model(tab.TASK)
    encoding = tokenizer.encode("A man is [MASK] a bike.")
    position = encoding.ids.index(MASK_ID)
    with torch.no_grad():
        p = F.softmax(model(torch.tensor([encoding.ids])).logits[0, position], -1)
    best = int(p[N_SPECIAL:].argmax()) + N_SPECIAL
    assert result.blanks[0][0] == (tokenizer.id_to_token(best), pytest.approx(float(p[best]), abs=1e-4))
    assert "riding" in [piece for piece, _ in result.blanks[0]]  # what people do to bikes in captions


def test_several_blanks_and_lower_case_mask(tab):
    result = tab.fill_mask("A woman in a red [mask] is sitting on a [ MASK ].", 3)
    assert len(result.blanks) == 2 and all(len(b) == 3 for b in result.blanks)
    assert result.tokens.count("[MASK]") == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A man is riding a bike.", "no blank to fill"),
        ("[MASK] [MASK]", "nothing but \\[MASK\\]"),
        ("", "no sentence"),
        (None, "no sentence"),
        ("A man is [MASK] a bike " + "and a dog runs " * 30, "at most 62"),
    ],
)
def test_bad_sentences_get_a_clear_message(tab, text, message):
    with pytest.raises(tab.InputError, match=message):
        tab.fill_mask(text, 5)


@pytest.mark.parametrize("top_k", [0, 21, 2.5, "many", None])
def test_bad_number_of_candidates(tab, top_k):
    with pytest.raises(tab.InputError, match="whole number from 1 to 20"):
        tab.fill_mask("A man is [MASK] a bike.", top_k)


def test_attention_view_for_attention_maps(tab):
    view = tab.attention_of("A dog [MASK] in the park.")
    attention = view.maps["encoder self"]
    assert attention.query_labels[0] == "[CLS]" and "[MASK]" in attention.key_labels
    assert float(attention.weights.triu(1).sum()) > 0


def test_three_families_side_by_side(tab):
    needed = [t for t in ("generation", "translation") if not (ROOT / "checkpoints" / t / "model.safetensors").exists()]
    if needed:
        pytest.skip(f"needs the {', '.join(needed)} checkpoints")
    figures = tab.compare_families("A man is [MASK] a bike.")
    assert len(figures) == len(tab.FAMILIES) == 5
    z = {f.kind + " " + f.task: torch.tensor(fig.data[0].z) for f, fig in zip(tab.FAMILIES, figures, strict=True)}
    bert, gpt = z["encoder self mlm"], z["causal self generation"]
    assert float(bert.triu(1).sum()) > 0.1 * float(bert.sum())  # BERT looks ahead
    assert float(gpt.triu(1).abs().sum()) == 0.0  # the GPT never does
    assert float(z["decoder self translation"].triu(1).abs().sum()) == 0.0
    cross = z["cross translation"]
    assert cross.shape[1] == z["encoder self translation"].shape[0]  # keys of cross = source pieces
    # the GPT read characters of the filled-in sentence, not "[MASK]"
    assert "[" not in "".join(figures[1].data[0].x)


def test_the_tab_opens_with_its_first_example_filled_in(tab):
    """Worked out once while the app is built: the same answer and maps as the buttons give."""
    import gradio as gr

    with gr.Blocks() as demo:
        tab.build()
    example, k = tab.EXAMPLES[0]
    expected = tab.fill_mask(example, k)
    [filled] = [b for b in demo.blocks.values() if isinstance(b, gr.Textbox) and b.label == "Most likely sentence"]
    assert filled.value == expected.text and "[MASK]" not in filled.value
    plots = [json.loads(b.value["plot"]) for b in demo.blocks.values() if isinstance(b, gr.Plot)]
    assert len(plots) == 1 + len(tab.FAMILIES)
    assert plots[0]["data"] == json.loads(tab.candidates_figure(expected).to_json())["data"]
    maps = [json.loads(f.to_json())["data"] for f in tab.compare_families(example)]
    assert [p["data"] for p in plots[1:]] == maps


# ----------------------------------------------------------------------------------------------
# Through the running app
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_endpoints_through_gradio_client(tab, request):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(request.getfixturevalue("app_server").url, verbose=False)  # started after tab's check
    filled, details, plot = client.predict("Two [MASK] are playing in the [MASK].", 4, api_name="/fill_mask")
    assert "[MASK]" not in filled and len(details["blanks"]) == 2
    assert all(len(blank) == 4 for blank in details["blanks"])
    expected = tab.fill_mask("Two [MASK] are playing in the [MASK].", 4)
    assert filled == expected.text
    assert [c["token"] for c in details["blanks"][0]] == [piece for piece, _ in expected.blanks[0]]
    with pytest.raises(AppError, match="no blank to fill"):
        client.predict("Two dogs are playing.", 4, api_name="/fill_mask")
    figures = client.predict("A man is [MASK] a bike.", api_name="/compare_families")
    assert len(figures) == 5 and all(f["type"] == "plotly" for f in figures)
    # the endpoint still answers after a refusal
    assert "[MASK]" not in client.predict("A [MASK] runs.", 1, api_name="/fill_mask")[0]
