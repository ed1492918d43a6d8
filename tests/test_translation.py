"""Translation: the shared vocabulary, language-token routing, training, batched beam search, the
Translate tab's `translate()` on bad input, cross-attention maps, and the BLEU evaluation."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import random
import unicodedata
import warnings
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_model
from models.decoding import beam_search, beam_search_batch
from models.tokenizers import load_tokenizer
from models.transformer import EncoderDecoder, EncoderDecoderConfig
from models.translation import EOS_ID, LANGUAGES, PAD_ID, UNK_ID, encode_source, language_id, train_tokenizer
from training import translation as tr
from training.common import export, start_from_checkpoint

# A made-up parallel corpus: word-for-word captions in the three languages, with the characters
# (umlauts, accents, apostrophes, punctuation) that the real data has.
NOUNS = [("man", "Mann", "homme"), ("girl", "Mädchen", "fille"), ("dog", "Hund", "chien"), ("child", "Kind", "enfant")]
ADJECTIVES = [("happy", "glückliche", "heureux"), ("small", "kleine", "petit"), ("tired", "müde", "fatigué")]
VERBS = [("runs", "läuft", "court"), ("sits", "sitzt", "est assis"), ("plays", "spielt", "joue")]
PLACES = [("street", "Straße", "rue"), ("garden", "Garten", "jardin"), ("café", "Café", "café")]


def caption(noun, adjective, verb, place) -> dict[str, str]:
    return {
        "en": f"A {adjective[0]} {noun[0]} {verb[0]} in the {place[0]}.",
        "de": f"Ein {adjective[1]} {noun[1]} {verb[1]} in der {place[1]}.",
        "fr": f"Un {noun[2]} {adjective[2]} {verb[2]} dans l'{place[2]}.",
    }


def write_corpus(folder: Path, sizes=(("train", 200), ("val", 20), ("test_2016_flickr", 12))) -> Path:
    combos = [caption(*c) for c in itertools.product(NOUNS, ADJECTIVES, VERBS, PLACES)]
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        rows = [rng.choice(combos) for _ in range(n)]
        for lang in LANGUAGES:
            # stray spaces, as upstream has: the reader must strip them
            lines = [f" {row[lang]} \n" if i % 7 == 0 else f"{row[lang]}\n" for i, row in enumerate(rows)]
            with gzip.open(folder / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(lines)
    return folder


TINY_MODEL = dict(
    max_len=24, n_encoder_layers=2, n_decoder_layers=2, n_heads=2, d_model=32, d_ff=64, dropout=0.0, norm_first=True
)


def tiny_config(**overrides) -> tr.Config:
    values = dict(model=dict(TINY_MODEL), vocab_size=150, max_tokens=256, warmup_steps=2, max_steps=20, val_every=10)
    return tr.Config(**{**values, **overrides})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "multi30k").parent


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, corpus) -> Path:
    """A random tiny model with the synthetic corpus's tokenizer, exported as the tab expects."""
    torch.manual_seed(0)
    module, _ = tr.build(tiny_config(), corpus)
    base = tmp_path_factory.mktemp("checkpoints")
    export(module, base / "translation", meta={})
    return base / "translation"


@pytest.fixture
def tab(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tiny_checkpoint.parent))
    from demos import translation

    return translation


# --- the shared vocabulary ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi30k_tokenizer(shared_data):
    folder = tr.multi30k_dir(shared_data)
    return train_tokenizer([s for lang in LANGUAGES for s in tr.read_split(folder, "train", lang)], 4000)


ORDINARY = [
    "A man in a blue shirt, jeans and a cap is standing near a red car.",
    "Two kids play soccer on a field; one of them wears a jersey with the number 10!",
    "Ein älterer Mann mit Brille fährt Fahrrad über eine große Straße.",
    "Zwei Mädchen sitzen am Ufer und schauen aufs Wasser (es ist sehr kalt).",
    "Une femme âgée, portant un manteau rouge, traverse la rue à côté d'un café.",
    "L'enfant joue avec un chien noir près de l'église, n'est-ce pas ?",
]


def test_tokenizer_round_trip_on_ordinary_sentences(multi30k_tokenizer):
    for sentence in ORDINARY:
        ids = multi30k_tokenizer.encode(sentence).ids
        assert UNK_ID not in ids
        assert multi30k_tokenizer.decode(ids) == sentence


def test_tokenizer_round_trip_on_the_validation_split(multi30k_tokenizer, shared_data):
    folder = tr.multi30k_dir(shared_data)
    for lang in LANGUAGES:
        sentences = tr.read_split(folder, "val", lang)
        encodings = multi30k_tokenizer.encode_batch(sentences)
        known = [(s, e.ids) for s, e in zip(sentences, encodings, strict=True) if UNK_ID not in e.ids]
        assert len(known) >= 0.99 * len(sentences)  # rare characters aside, everything is covered
        # equal up to NFKC, the normaliser's one change (it turns a no-break space into a space)
        assert all(multi30k_tokenizer.decode(ids) == unicodedata.normalize("NFKC", s) for s, ids in known), lang


def test_special_and_language_tokens_have_fixed_ids(multi30k_tokenizer):
    assert [multi30k_tokenizer.token_to_id(t) for t in ("<pad>", "<s>", "</s>", "<unk>")] == [0, 1, 2, 3]
    ids = {language_id(multi30k_tokenizer, lang) for lang in LANGUAGES}
    assert len(ids) == 3 and min(ids) > UNK_ID
    # case is kept: "A" and "a" are different pieces
    assert multi30k_tokenizer.encode("A").ids != multi30k_tokenizer.encode("a").ids


# --- data: routing by language token, token-budget batches ----------------------------------------


def test_pairs_start_the_target_with_its_language_token(corpus):
    tokenizer = train_tokenizer(
        [s for lang in LANGUAGES for s in tr.read_split(corpus / "multi30k", "train", lang)], 150
    )
    pairs = tr.make_pairs(tokenizer, corpus / "multi30k", "val", list(tr.DIRECTIONS), max_len=24)
    assert len(pairs) == 4 * 20
    for d, direction in enumerate(tr.DIRECTIONS):
        src_lang, tgt_lang = direction.split("-")
        src_text = tr.read_split(corpus / "multi30k", "val", src_lang)[0]
        tgt_text = tr.read_split(corpus / "multi30k", "val", tgt_lang)[0]
        src, tgt = pairs[d * 20]
        assert tgt[0] == language_id(tokenizer, tgt_lang)
        assert src[-1] == EOS_ID and tgt[-1] == EOS_ID
        assert tokenizer.decode(src, skip_special_tokens=True) == src_text
        assert tokenizer.decode(tgt, skip_special_tokens=True) == tgt_text
    src, tgt_in, tgt_out = tr.collate(pairs[:5])
    for row, (s, t) in enumerate(pairs[:5]):  # teacher forcing: labels are the decoder input shifted left
        n = len(t) - 1
        assert tgt_in[row, :n].tolist() == t[:-1] and tgt_out[row, :n].tolist() == t[1:]
        assert src[row, : len(s)].tolist() == s
        assert (tgt_in[row, n:] == PAD_ID).all() and (tgt_out[row, n:] == PAD_ID).all()
    assert {int(t) for t in tgt_in[:, 0]} == {language_id(tokenizer, "de")}  # the first direction is en-de


def test_token_batches_cover_everything_once_within_the_budget():
    rng = random.Random(1)
    lengths = [rng.randint(3, 40) for _ in range(500)]
    sampler = tr.TokenBatchSampler(lengths, max_tokens=200, shuffle=True, seed=0)
    epochs = [list(sampler), list(sampler)]
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in batches)
        assert len(batches) == len(sampler)
        # similar lengths together: the padding is a small share of each batch
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        assert sum(lengths) / padded > 0.9
    assert epochs[0] != epochs[1]  # reshuffled every epoch


# --- training ------------------------------------------------------------------------------------


def test_training_steps_lower_the_label_smoothed_loss(corpus):
    torch.manual_seed(0)
    module, data = tr.build(tiny_config(), corpus)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = module.loss(batch, 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_a_training_step_never_makes_the_host_wait(corpus):
    """No token count, no .item() in the step: on a GPU each would stop the host from queueing the
    next kernels until the device caught up (the step used to count its target tokens)."""
    from tests.host_waits import HostWaits

    module, data = tr.build(tiny_config(), corpus)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    with warnings.catch_warnings(), HostWaits() as waits:  # Lightning warns that self.log has no Trainer
        warnings.simplefilter("ignore")
        module.training_step(batch, 0).backward()
    assert waits.calls == []


def test_the_weight_ema_is_validated_and_shipped_but_not_trained(corpus, tmp_path):
    torch.manual_seed(0)
    module, data = tr.build(tiny_config(ema_decay=0.9), corpus)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in module.model.parameters()}  # the copy has no optimizer state
    with warnings.catch_warnings():  # Lightning warns that self.log has no Trainer here
        warnings.simplefilter("ignore")
        for step in range(5):
            loss = module.training_step(batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            module.on_train_batch_end(loss, batch, step)  # the EMA follows
        ema = module.ema.module
        assert not torch.equal(ema.embed.weight, module.model.embed.weight)
        logged = {}
        module.log_validation = lambda n, **metrics: logged.update(metrics, n=n)
        module.validation_step(batch, 0)
    assert logged["n"] == int((batch[2] != PAD_ID).sum())  # each batch weighs by its target tokens
    assert logged["loss"].item() == pytest.approx(module.loss(batch, 0.0, ema.forward).item())
    assert logged["loss_raw"].item() == pytest.approx(module.loss(batch, 0.0).item())
    assert logged["loss"].item() != pytest.approx(logged["loss_raw"].item())
    shipped = load_model(export(module, tmp_path / "translation", meta={}))
    assert torch.equal(shipped.embed.weight, ema.embed.weight.half().float())


def test_init_from_starts_from_the_checkpoints_weights_and_its_ema_too(corpus, tiny_checkpoint):
    shipped = load_model(tiny_checkpoint)
    torch.manual_seed(1)  # other random weights than the checkpoint's
    module, _ = tr.build(tiny_config(ema_decay=0.9), corpus)
    assert not torch.equal(module.model.embed.weight, shipped.embed.weight)
    start_from_checkpoint(module, tiny_checkpoint)
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(module.model.state_dict()[name], tensor), name
        assert torch.equal(module.ema.module.state_dict()[name], tensor), name


def test_init_from_refuses_another_model_or_another_tokenizer_but_not_another_dropout(corpus, tiny_checkpoint):
    module, _ = tr.build(tiny_config(model={**TINY_MODEL, "d_ff": 48}), corpus)
    with pytest.raises(ValueError, match="another model"):
        start_from_checkpoint(module, tiny_checkpoint)
    # dropout acts in training only: a run may continue these weights with more of it
    module, _ = tr.build(tiny_config(model={**TINY_MODEL, "dropout": 0.3}), corpus)
    start_from_checkpoint(module, tiny_checkpoint)
    assert module.model.config.dropout == 0.3
    assert torch.equal(module.model.embed.weight, load_model(tiny_checkpoint).embed.weight)
    module, _ = tr.build(tiny_config(), corpus)
    other_texts = [f"{a} {b} {c}" for a, b, c in itertools.product(["xy", "zw", "qu"], ["ab", "cd"], ["ef", "gh"])]
    module.tokenizer = train_tokenizer(other_texts * 20, 150, "bpe")  # token ids that mean other words
    with pytest.raises(ValueError, match="another tokenizer"):
        start_from_checkpoint(module, tiny_checkpoint)


# --- decoding ------------------------------------------------------------------------------------


def test_batched_beam_search_equals_one_source_at_a_time():
    for seed in range(4):
        torch.manual_seed(seed)
        cfg = EncoderDecoderConfig(
            vocab_size=6, max_len=32, n_encoder_layers=2, n_decoder_layers=2, n_heads=2, d_model=16, d_ff=32, dropout=0
        )
        model = EncoderDecoder(cfg).double().eval()
        with torch.no_grad():
            model.embed.weight[EOS_ID] *= 3  # make </s> likely, so beams end at different steps
        src = torch.randint(3, 6, (5, 7))
        src[1, 4:], src[3, 2:] = PAD_ID, PAD_ID
        memory, mask, _ = model.encode(src)
        prompts = torch.tensor([[4], [5], [4], [5], [4]])  # two different "language" tokens
        batched = beam_search_batch(model.target_decoder(memory, mask), prompts, 3, 12, eos_id=EOS_ID)
        for row in range(5):
            n = int((src[row] != PAD_ID).sum())
            m, mm, _ = model.encode(src[row : row + 1, :n])
            single = beam_search(model.target_decoder(m, mm), prompts[row : row + 1], 3, 12, eos_id=EOS_ID)
            assert [h.tokens for h in batched[row]] == [h.tokens for h in single]
            assert [h.score for h in batched[row]] == pytest.approx([h.score for h in single])
            for h in batched[row]:  # a valid decode: in the vocabulary, no </s> inside, within the limit
                assert all(0 <= t < 6 and t != EOS_ID for t in h.tokens) and len(h.tokens) <= 12


def test_translate_ids_routes_by_the_language_token(tiny_checkpoint):
    from models.tokenizers import load_tokenizer
    from models.translation import max_output_len, translate_ids

    model, tokenizer = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    source = tokenizer.encode("A small dog runs in the garden.").ids + [EOS_ID]
    for lang in ("de", "fr"):
        out = translate_ids(model, [source], language_id(tokenizer, lang), beam_size=2)[0]
        memory, mask, _ = model.encode(torch.tensor([source]))
        start = torch.tensor([[language_id(tokenizer, lang)]])
        limit = max_output_len(model, len(source))
        expected = beam_search(model.target_decoder(memory, mask), start, 2, limit, EOS_ID, 0.6)
        assert out == expected[0].tokens


# --- the Translate tab ---------------------------------------------------------------------------


def test_translate_returns_text_tokens_and_cross_attention(tab):
    result = tab.translate("A happy girl plays in the street.", "English", "German", beam_size=3)
    assert isinstance(result.text, str)
    assert result.source_tokens[-1] == "</s>" and result.target_tokens[-1] == "</s>"
    n_layers, n_heads = TINY_MODEL["n_decoder_layers"], TINY_MODEL["n_heads"]
    assert result.cross_attention.shape == (n_layers, n_heads, len(result.target_tokens), len(result.source_tokens))
    assert result.cross_attention.sum(-1) == pytest.approx(1.0, abs=1e-5)  # each row is a distribution
    figure = tab.attention_figure(result, "average", "2")
    assert list(figure.data[0].z.shape) == [len(result.target_tokens), len(result.source_tokens)]


def test_the_tab_opens_with_its_first_example_translated(tab, monkeypatch):
    """Worked out once while the app is built: the same translation and map as the button gives,
    kept as the result the layer and head selectors redraw; a model that cannot read the example
    leaves the tab empty, as it was before anyone asked."""
    import gradio as gr

    def built() -> dict:
        with gr.Blocks() as demo:
            tab.build()
        return {type(b).__name__ + ":" + str(getattr(b, "label", None)): b for b in demo.blocks.values()}

    expected = tab.translate(*tab.EXAMPLES[0])
    blocks = built()
    assert blocks["Textbox:Source text"].value == tab.EXAMPLES[0][0]
    assert blocks["Textbox:Translation"].value == expected.text
    [plot] = [b for b in blocks.values() if isinstance(b, gr.Plot)]
    figure = tab.attention_figure(expected, "average", "average")
    assert json.loads(plot.value["plot"])["data"] == json.loads(figure.to_json())["data"]
    [state] = [b for b in blocks.values() if isinstance(b, gr.State)]
    assert state.value.text == expected.text and state.value.cross_attention.shape == expected.cross_attention.shape

    def unreadable(*args, **kwargs):
        raise tab.InputError("The model cannot read any of this text")

    monkeypatch.setattr(tab, "translate", unreadable)
    blocks = built()
    assert not blocks["Textbox:Source text"].value and not blocks["Textbox:Translation"].value


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_translate_refuses_empty_text(tab, text):
    with pytest.raises(tab.InputError, match="nothing to translate"):
        tab.translate(text, "en", "de")


def test_translate_refuses_the_same_language(tab):
    with pytest.raises(tab.InputError, match="both German"):
        tab.translate("Ein Hund läuft.", "German", "de")


@pytest.mark.parametrize("beam", [0, 9, 2.5, "abc", None])
def test_translate_refuses_a_bad_beam_size(tab, beam):
    with pytest.raises(tab.InputError, match="Beam size (must be a whole number|.* (minimum|maximum) value)"):
        tab.translate("A dog runs.", "en", "de", beam_size=beam)


def test_translate_truncates_long_text_and_says_so(tab):
    result = tab.translate(" ".join(["A small dog runs in the garden."] * 20), "en", "fr", beam_size=1)
    assert len(result.source_tokens) == TINY_MODEL["max_len"]
    assert any("at most" in note for note in result.notes)


def test_translate_leaves_out_unknown_characters_and_warns(tab):
    result = tab.translate("A dog 🐶 runs in the 公园 garden.", "en", "de", beam_size=2)
    assert "<unk>" not in result.source_tokens
    assert any("🐶" in note and "公" in note for note in result.notes)
    with pytest.raises(tab.InputError, match="cannot read"):
        tab.translate("🐶🐱 公园", "en", "de")


def test_the_tab_reads_a_source_as_evaluation_does(tab, tiny_checkpoint):
    """One source encoder (models.translation.encode_source) behind the tab and translate_texts."""
    tokenizer, max_len = load_tokenizer(tiny_checkpoint), TINY_MODEL["max_len"]
    long = " ".join(["A small dog runs in the garden."] * 20)
    for text in ("A small dog runs.", "A dog 🐶 runs in the 公园 garden.", long):
        source = encode_source(tokenizer, text, max_len)
        ids, notes = tab.read_source(tokenizer, text, max_len)
        assert ids == source.ids and len(ids) <= max_len and ids[-1] == EOS_ID and UNK_ID not in ids
        assert source.truncated == any("at most" in note for note in notes)
        assert "".join(source.unknown) == ("🐶公园" if "🐶" in text else "")
    cut = encode_source(tokenizer, long, max_len)
    assert cut.truncated and cut.n_pieces > max_len - 1
    assert tokenizer.decode(cut.ids[:-1]) == long[: cut.end]  # the pieces kept are the text up to `end`


def test_translate_warns_about_very_long_words(tab):
    result = tab.translate("A dog runs in the Gartenstraßenhundespielplatzwiese.", "en", "de", beam_size=1)
    assert any("long words" in note for note in result.notes)


def test_german_to_french_goes_through_english(tab, monkeypatch):
    from demos.common import get_model

    _, tokenizer = get_model("translation")
    asked = []

    def fake_translate_ids(model, sources, target_id, beam_size, batch_size=64):
        asked.append(target_id)
        return [tokenizer.encode("A dog runs.").ids]

    monkeypatch.setattr(tab, "translate_ids", fake_translate_ids)
    result = tab.translate("Ein Hund läuft.", "de", "fr", beam_size=1)
    assert asked == [language_id(tokenizer, "en"), language_id(tokenizer, "fr")]
    assert any('through English ("A dog runs.")' in note for note in result.notes)
    assert result.source_tokens == [tokenizer.id_to_token(i) for i in tokenizer.encode("A dog runs.").ids] + ["</s>"]


# --- evaluation ----------------------------------------------------------------------------------


def test_evaluate_prints_bleu_per_direction_with_a_signature(tiny_checkpoint, corpus):
    metrics = tr.evaluate(tiny_checkpoint, corpus, limit=5, device="cpu")
    assert set(metrics) == {"bleu", "signature"}
    assert set(metrics["bleu"]) == {"en-de", "de-en", "en-fr", "fr-en"}
    assert all(0.0 <= v <= 100.0 for v in metrics["bleu"].values())
    assert "case:mixed" in metrics["signature"] and "tok:13a" in metrics["signature"]


@pytest.mark.slow
def test_train_and_evaluate_cli_end_to_end(corpus, tmp_path, capsys):
    from training import evaluate, train

    out = tmp_path / "ckpt"
    overrides = [f"model.{k}={v}" for k, v in TINY_MODEL.items()] + [
        "vocab_size=150",
        "max_tokens=256",
        "max_steps=40",
        "warmup_steps=5",
        "val_every=20",
    ]
    summary = train.main(
        ["translation", "--data-dir", str(corpus), "--out", str(out), "--log-dir", str(tmp_path), "--set", *overrides]
    )
    history = [json.loads(line) for line in (tmp_path / "translation" / "validation.jsonl").read_text().splitlines()]
    assert summary["steps"] == 40 and [row["step"] for row in history] == [20, 40]
    assert history[1]["val/loss"] < history[0]["val/loss"] < math.log(150)  # learning, and better than uniform
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json"}
    metrics = evaluate.main(["translation", "--checkpoint", str(out), "--data-dir", str(corpus), "--limit", "4"])
    assert set(metrics["bleu"]) == set(tr.DIRECTIONS)
    # a second run from that checkpoint (init_from), at learning rate 0, starts where the first ended
    more = [*overrides[:-3], "max_steps=20", "val_every=20", f"init_from={out}", "lr=0"]
    train.main(
        ["translation", "--data-dir", str(corpus), "--out", str(tmp_path / "more"), "--log-dir", str(tmp_path)]
        + ["--set", *more]
    )
    resumed = [json.loads(line) for line in (tmp_path / "translation" / "validation.jsonl").read_text().splitlines()]
    assert len(resumed) == 1, "the second run's log starts empty, not after the first run's rows"
    resumed = resumed[0]
    assert resumed["step"] == 20 and resumed["val/loss"] == pytest.approx(history[1]["val/loss"], abs=0.01)


def test_shipped_checkpoint_is_small_and_translates():
    from demos.common import ROOT

    folder = ROOT / "checkpoints" / "translation"
    if not (folder / "model.safetensors").exists():
        pytest.skip("checkpoints/translation is not there (train it: python -m training.train translation)")
    assert all(p.stat().st_size < 15 * 2**20 for p in folder.iterdir())
    from models.checkpoint import load_model
    from models.tokenizers import load_tokenizer
    from models.translation import translate_texts

    model, tokenizer = load_model(folder), load_tokenizer(folder)
    assert tokenizer.decode(tokenizer.encode(ORDINARY[4]).ids) == ORDINARY[4]
    (german,) = translate_texts(model, tokenizer, ["A dog is running."], "de", beam_size=2)
    assert german.strip()
