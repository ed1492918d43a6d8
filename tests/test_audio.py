"""Audio: preprocessing of any recording, the spectrogram transformer, its training step, the
tab's function on every kind of file a person might send, and the shipped model's invariance to
sample rate, channels, surrounding silence and loudness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from demos.common import checkpoint_dir
from models.audio import (
    LISTENING_SPEEDS,
    AudioConfig,
    AudioTransformer,
    SpectrogramConvStem,
    log_mel,
    prepare_waveform,
    speed_changed,
)
from models.checkpoint import load_model, save_checkpoint

RATE = 8000


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# prepare_waveform
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_prepare_resamples_to_model_rate(rate):
    waveform, notes = prepare_waveform(tone(1.0, rate), rate)
    assert waveform.dtype == torch.float32
    assert waveform.numel() == RATE  # one second at 8 kHz (a steady tone has no silence to trim)
    assert any("Resampled" in n for n in notes) == (rate != RATE)


def test_prepare_trims_padded_silence():
    rate = 16000
    padded = np.concatenate([silence(1.0, rate), tone(0.5, rate), silence(1.0, rate)])
    waveform, _ = prepare_waveform(padded, rate)
    assert abs(waveform.numel() - 0.5 * RATE) <= 0.01 * RATE  # 10 ms trimming resolution


def test_prepare_sets_loudness():
    quiet, _ = prepare_waveform(tone(0.5, RATE, amplitude=0.001), RATE)
    loud, _ = prepare_waveform(tone(0.5, RATE, amplitude=0.9), RATE)
    assert torch.allclose(quiet, loud, atol=1e-4)
    assert quiet.pow(2).mean().sqrt().item() == pytest.approx(0.1, rel=1e-3)  # -20 dBFS


def test_prepare_mixes_channels_in_any_layout():
    mono = tone(0.5, RATE)
    reference, _ = prepare_waveform(mono, RATE)
    for samples in (np.stack([mono, mono], 1), np.stack([mono, mono]), np.stack([mono] * 4, 1)):
        waveform, notes = prepare_waveform(samples, RATE)
        assert torch.allclose(waveform, reference, atol=1e-6)
        assert any("channels down to mono" in n for n in notes)


def test_prepare_scales_integer_pcm():
    x = tone(0.5, RATE)
    reference, _ = prepare_waveform(x, RATE)
    int16 = np.round(x * 32767).astype(np.int16)
    int32 = int16.astype(np.int32) << 16
    uint8 = (np.round(x * 127) + 128).astype(np.uint8)
    for samples, atol in ((int16, 1e-3), (int32, 1e-3), (uint8, 0.02)):
        waveform, _ = prepare_waveform(samples, RATE)
        assert torch.allclose(waveform, reference, atol=atol), samples.dtype


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_prepare_rejects_nan_and_inf(bad):
    x = tone(0.5, RATE)
    x[100] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        prepare_waveform(x, RATE)


def test_prepare_rejects_empty_silent_and_odd_input():
    with pytest.raises(ValueError, match="empty"):
        prepare_waveform(np.zeros(0, np.int16), RATE)
    with pytest.raises(ValueError, match="silent"):
        prepare_waveform(silence(2.0, RATE), RATE)
    with pytest.raises(ValueError, match="sample rate"):
        prepare_waveform(tone(0.5, RATE), 0)
    with pytest.raises(ValueError, match="numbers"):
        prepare_waveform(np.array(["a", "b"]), RATE)


def test_prepare_caps_a_long_recording_at_its_loudest_part():
    rng = np.random.default_rng(0)
    ten_minutes = (0.001 * rng.standard_normal(600 * RATE)).astype(np.float32)
    burst = slice(300 * RATE, 304 * RATE)  # 4 s of tone, louder than the hiss
    ten_minutes[burst] += tone(4.0, RATE)
    c = AudioConfig()
    waveform, notes = prepare_waveform(ten_minutes, RATE, c)
    assert waveform.numel() == c.max_samples
    assert any("loudest" in n and "600.0 s" in n for n in notes)
    # it chose the tone: almost all energy near 440 Hz
    spectrum = np.abs(np.fft.rfft(waveform.numpy())) ** 2
    freqs = np.fft.rfftfreq(waveform.numel(), 1 / RATE)
    assert spectrum[np.abs(freqs - 440) < 20].sum() > 0.95 * spectrum.sum()


def test_log_mel_shape():
    c = AudioConfig()
    spec = log_mel(torch.from_numpy(tone(1.0, RATE)), c)
    assert spec.shape == (c.n_mels, c.n_frames(RATE))
    assert spec.max() - spec.min() <= c.top_db + 1e-3


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

TINY = AudioConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64)


def test_the_answer_averages_the_clip_heard_at_three_speeds():
    torch.manual_seed(0)
    model = AudioTransformer(TINY).eval()
    rate = TINY.sample_rate
    clips = [torch.sin(torch.arange(6000) * f) * 0.1 for f in (0.3, 0.7)]  # 0.75 s of a tone each
    slower, faster = speed_changed(clips[0], 0.9, rate), speed_changed(clips[0], 1.1, rate)
    # resampled to 8900 Hz and 7300 Hz (sample_rate / speed, to 100 Hz), played at 8000 Hz
    assert abs(slower.numel() - 6000 * 8900 / rate) <= 1 and abs(faster.numel() - 6000 * 7300 / rate) <= 1
    assert speed_changed(clips[0], 1.0, rate) is clips[0]
    with torch.no_grad():

        def alone(w):  # one clip, one pass: no batch, no padding
            return model(w[None]).logits.softmax(-1)[0]

        answers = model.probabilities(clips)
        for clip, answer in zip(clips, answers, strict=True):
            by_hand = torch.stack([alone(speed_changed(clip, s, rate)) for s in LISTENING_SPEEDS]).mean(0)
            torch.testing.assert_close(answer, by_hand, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.probabilities(clips, speeds=(1.0,))[1], alone(clips[1]), rtol=0, atol=1e-5)
    assert not torch.allclose(answers[0], alone(clips[0]), atol=1e-4)  # the other speeds do count


@pytest.mark.parametrize("stem, stem_layers", [("patch", 2), ("conv", 2), ("conv", 3)])
def test_attention_shapes_and_padding_invariance(stem, stem_layers):
    torch.manual_seed(0)
    model = AudioTransformer(dataclasses.replace(TINY, stem=stem, stem_channels=4, stem_layers=stem_layers)).eval()
    lengths = torch.tensor([8000, 5000, 2000])
    waveforms = torch.randn(3, 8000) * 0.1
    for row, n in enumerate(lengths):
        waveforms[row, n:] = 0
    out = model(waveforms, lengths, need_weights=True)
    assert out.logits.shape == (3, 10)
    tokens = TINY.n_tokens(TINY.n_frames(8000))
    assert len(out.attentions) == TINY.n_layers
    for layer in out.attentions:
        w = layer["self"]
        assert w.shape == (3, TINY.n_heads, 1 + tokens, 1 + tokens)
        assert torch.allclose(w.sum(-1), torch.ones(()), atol=1e-5)
    # padding changes nothing: each row alone gives the same logits, and pads get no attention
    for row, n in enumerate(lengths.tolist()):
        alone = model(waveforms[row : row + 1, :n]).logits
        assert torch.allclose(alone, out.logits[row : row + 1], atol=1e-5)
    valid = TINY.n_tokens(TINY.n_frames(2000))
    assert out.attentions[0]["self"][2, :, :, 1 + valid :].abs().max() == 0


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_model_is_deaf_to_gain(stem):
    torch.manual_seed(0)
    model = AudioTransformer(dataclasses.replace(TINY, stem=stem, stem_channels=4)).eval()
    x = torch.randn(1, 6000) * 0.1
    assert torch.allclose(model(x).logits, model(100 * x).logits, atol=1e-4)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("extra", [{}, {"mixup_alpha": 0.4}, {"time_stretch": 0.2}])
def test_training_step_lowers_loss(extra):
    from training.audio import AudioModule, Config

    torch.manual_seed(0)
    model = {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}
    config = Config(model=model, lr=3e-3, warmup_steps=1, **extra)
    module = AudioModule(config)
    # four "digits": tones at different pitches, one second each
    digits = torch.arange(4).repeat(4)
    t = torch.arange(RATE) / RATE
    waveforms = 0.3 * torch.sin(2 * torch.pi * (300 + 400 * digits[:, None]) * t)
    lengths = torch.full((16,), RATE)
    batch = (waveforms, lengths, digits)

    def eval_loss() -> float:
        module.eval()
        with torch.no_grad():
            logits = module.model(waveforms, lengths).logits
        module.train()
        return torch.nn.functional.cross_entropy(logits, digits).item()

    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr)
    before = eval_loss()
    for _ in range(25):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < 0.5 * before


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_weight_ema_is_validated_and_shipped_but_not_trained(tmp_path):
    from training.audio import AudioModule, Config
    from training.common import export

    torch.manual_seed(0)
    model = {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}
    module = AudioModule(Config(model=model, lr=3e-3, warmup_steps=1, ema_decay=0.9))
    digits = torch.arange(4).repeat(2)
    waveforms = 0.3 * torch.sin(2 * torch.pi * (300 + 400 * digits[:, None]) * torch.arange(RATE) / RATE)
    batch = (waveforms, torch.full((8,), RATE), digits)
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in module.model.parameters()}  # the copy has no optimizer state
    for step in range(10):
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.on_train_batch_end(loss, batch, step)  # the EMA follows
    ema = module.ema.module
    assert not torch.equal(ema.classifier.head.weight, module.model.classifier.head.weight)
    logged = {}
    module.log_validation = lambda n, **metrics: logged.update(metrics)
    module.eval()
    module.validation_step(batch, 0)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(ema(*batch[:2]).logits, digits)
        raw = torch.nn.functional.cross_entropy(module.model(*batch[:2]).logits, digits)
    assert logged["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(logged["loss"].item() - raw.item()) > 1e-3  # the EMA lags the trained weights
    shipped = load_model(export(module, tmp_path / "audio", meta={}))
    assert torch.equal(shipped.classifier.head.weight, ema.classifier.head.weight.half().float())


def test_mixup_mixes_two_clips_of_the_batch():
    from training.audio import mixup

    torch.manual_seed(0)
    spec = torch.randn(6, 40, 30)
    frames = torch.tensor([30, 10, 20, 30, 5, 25])
    for b, n in enumerate(frames.tolist()):
        spec[b, :, n:] = 0  # padding, as AudioTransformer.spectrogram leaves it
    mixed, mixed_frames, other, lam = mixup(spec, frames, alpha=0.4)
    assert 0 <= lam <= 1 and sorted(other.tolist()) == list(range(6))
    for b in range(6):
        torch.testing.assert_close(mixed[b], lam * spec[b] + (1 - lam) * spec[other[b]])
        assert mixed_frames[b] == max(frames[b], frames[other[b]])
        assert not mixed[b, :, mixed_frames[b] :].any()  # still zero past the longer clip
    draws = [mixup(spec, frames, alpha=0.4)[3] for _ in range(200)]
    assert 0.4 < np.mean(draws) < 0.6 and np.std(draws) > 0.25  # Beta(0.4, 0.4): symmetric, mostly near 0 or 1


def test_augmentations():
    from training.audio import Config, augment_waveform, mel_warp, random_eq

    torch.manual_seed(0)
    spec = torch.randn(2, 40, 30)
    assert torch.allclose(mel_warp(spec, 0.0), spec)
    offset = random_eq(spec, 1.0) - spec
    assert torch.allclose(offset, offset[..., :1].expand_as(offset), atol=1e-6)  # one gain per band, all frames
    assert offset.abs().max() > 0
    clip = torch.from_numpy(tone(0.5, RATE))
    everything = Config(p_speed=1, p_reverb=1, p_pad=1, p_noise=1, p_gain=1)
    for _ in range(20):
        augmented = augment_waveform(clip, RATE, everything)
        assert augmented.numel() > 0.3 * RATE and torch.isfinite(augmented).all()
        assert augmented.abs().max() <= 1.0  # the gain step clips like a full-scale converter
        prepare_waveform(augmented.numpy(), RATE)  # training clips take the users' path


def test_time_stretch_changes_the_tempo_not_the_bands():
    from training.audio import time_stretch

    ramp = torch.arange(20.0).expand(2, 3, 20).clone()  # frame t holds t in every band
    ramp[1, :, 10:] = 0  # the second clip is 10 frames long, then padding
    frames = torch.tensor([20, 10])
    same, same_frames = time_stretch(ramp, frames, 0.0, max_frames=100, tempo=torch.ones(2))
    torch.testing.assert_close(same, ramp)
    assert same_frames.tolist() == [20, 10]
    fast, fast_frames = time_stretch(ramp, frames, 0.0, max_frames=100, tempo=torch.tensor([2.0, 2.0]))
    assert fast_frames.tolist() == [10, 5]
    torch.testing.assert_close(fast[0, :, :10], torch.arange(0.0, 20, 2).expand(3, 10))
    torch.testing.assert_close(fast[1, :, :5], torch.arange(0.0, 10, 2).expand(3, 5))
    assert not fast[0, :, 10:].any() and not fast[1, :, 5:].any()  # past the new end: padding
    slow, slow_frames = time_stretch(ramp, frames, 0.0, max_frames=100, tempo=torch.tensor([0.5, 0.5]))
    assert slow_frames.tolist() == [20, 20]  # the long clip keeps the batch's 20 frames
    # each frame read twice, interpolated; the last output frame stops at the clip's last frame, not its padding
    torch.testing.assert_close(slow[1, 0], (torch.arange(20.0) * 0.5).clamp(max=9))
    capped = time_stretch(ramp, frames, 0.0, max_frames=15, tempo=torch.tensor([0.5, 0.5]))[1]
    assert capped.tolist() == [15, 15]  # the model's longest input
    torch.manual_seed(0)
    spec = torch.randn(64, 3, 30)
    drawn, drawn_frames = time_stretch(spec, torch.full((64,), 20), 0.2, max_frames=100)
    assert 16 <= drawn_frames.min() < drawn_frames.max() <= 25  # 20 frames at tempo 0.8 .. 1.2
    assert drawn.shape == spec.shape
    padded = torch.cat([spec[:1, :, :20], torch.zeros(1, 3, 10)], -1)
    a = time_stretch(padded, torch.tensor([20]), 0.0, max_frames=100, tempo=torch.tensor([1.3]))[0]
    b = time_stretch(padded[..., :20], torch.tensor([20]), 0.0, max_frames=100, tempo=torch.tensor([1.3]))[0]
    torch.testing.assert_close(a[..., :20], b)  # the batch's padding changes nothing


@pytest.mark.parametrize("layers", [2, 3])
def test_conv_stem_moves_with_the_voice(layers):
    """Shifting a spectrogram up 2**layers mel bands shifts the conv stem's feature maps up one of
    their (2**layers times coarser) bands, away from the edges: the same formants at another pitch
    give the same features, one place over. Raw patches have no such property."""
    torch.manual_seed(0)
    stem = SpectrogramConvStem(n_mels=40, channels=3, layers=layers).eval()
    shift, bands = 2**layers, 40 >> layers
    spec = torch.randn(2, 40, 12)
    higher = torch.zeros_like(spec)
    higher[:, shift:] = spec[:, :-shift]
    frames = torch.tensor([12, 9])
    spec[1, :, 9:] = higher[1, :, 9:] = 0  # a padded row: its padding stays zero either way
    maps = stem(spec, frames).unflatten(1, (3, bands))  # (B, channels, bands, frames)
    moved = stem(higher, frames).unflatten(1, (3, bands))
    inner = slice(2, bands - 1)  # bands whose receptive field stays clear of both edges
    below = slice(1, bands - 2)
    assert torch.allclose(moved[:, :, inner], maps[:, :, below], atol=1e-6)
    assert not torch.allclose(moved[:, :, inner], maps[:, :, inner], atol=1e-2)
    assert moved[1, :, :, 9:].abs().max() == 0


def test_conv_stem_layers_must_divide_the_bands():
    with pytest.raises(ValueError, match="multiple of 8"):
        SpectrogramConvStem(n_mels=36, channels=3, layers=3)


def test_export_round_trip(tmp_path):
    torch.manual_seed(0)
    model = AudioTransformer(TINY).eval()
    save_checkpoint(tmp_path, model, {"note": "tiny"})
    loaded = load_model(tmp_path)
    x = torch.randn(1, 4000) * 0.1
    assert loaded.config == TINY
    assert torch.allclose(loaded(x).logits, model(x).logits, atol=2e-2)  # fp16 weights


# ----------------------------------------------------------------------------------------------
# The tab's function on every kind of input
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "audio", AudioTransformer(TINY))
    monkeypatch.setenv("PLAYGROUND_CHECKPOINTS", str(tmp_path))
    return tmp_path / "audio"


@pytest.mark.parametrize(
    ("subtype", "rate", "channels"),
    [
        ("PCM_U8", 8000, 1),
        ("PCM_16", 16000, 1),
        ("PCM_24", 44100, 2),
        ("PCM_32", 48000, 1),
        ("FLOAT", 22050, 1),
        ("DOUBLE", 8000, 1),
        ("PCM_16", 48000, 6),
    ],
)
def test_classify_reads_every_wav_kind(tiny_checkpoint, tmp_path, subtype, rate, channels):
    from demos.audio import classify_audio

    data = np.tile(tone(0.6, rate)[:, None], (1, channels))
    path = tmp_path / f"clip_{subtype}_{channels}.wav"
    sf.write(path, data, rate, subtype=subtype)
    result = classify_audio(str(path))
    assert len(result.top3) == 3
    assert sum(result.top3.values()) <= 1 + 1e-6
    tokens = result.token_times.size
    assert result.cls_attention.shape == (TINY.n_layers, TINY.n_heads, tokens)
    assert result.rollout.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.spectrogram.shape == (TINY.n_mels, result.frame_times.size)
    assert result.duration_s == pytest.approx(0.6, abs=0.02)
    assert (channels > 1) == any("channels down to mono" in n for n in result.notes)


def test_classify_reads_flac_ogg_and_arrays(tiny_checkpoint, tmp_path):
    from demos.audio import classify_audio

    x = tone(0.6, 16000)
    for name in ("clip.flac", "clip.ogg"):
        sf.write(tmp_path / name, x, 16000)
        assert len(classify_audio(str(tmp_path / name)).top3) == 3
    as_gradio_gives = (48000, np.round(np.tile(tone(0.6, 48000)[:, None], (1, 2)) * 32767).astype(np.int16))
    assert len(classify_audio(as_gradio_gives).top3) == 3


def test_classify_refuses_bad_input_with_a_sentence(tiny_checkpoint, tmp_path):
    from demos.audio import BadAudio, classify_audio

    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    sf.write(tmp_path / "silent.wav", silence(2.0, 16000), 16000)
    damaged = tone(0.5, 16000)
    damaged[10:20] = np.nan
    sf.write(tmp_path / "nan.wav", damaged, 16000, subtype="FLOAT")
    (tmp_path / "notes.wav").write_text("this is not audio at all\n" * 20)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    cases = {
        "empty.wav": "empty",
        "silent.wav": "silent",
        "nan.wav": "NaN or infinite",
        "notes.wav": "not an audio file",
        "photo.png": "not an audio file",
        "missing.wav": "No such file",
    }
    for name, message in cases.items():
        with pytest.raises(BadAudio, match=message):
            classify_audio(str(tmp_path / name))
    with pytest.raises(BadAudio, match="No audio"):
        classify_audio(None)
    with pytest.raises(BadAudio, match="empty"):
        classify_audio((16000, np.zeros(0, np.int16)))


def test_classify_caps_a_ten_minute_file(tiny_checkpoint, tmp_path):
    from demos.audio import classify_audio

    rng = np.random.default_rng(1)
    long = (0.01 * rng.standard_normal(600 * RATE)).astype(np.float32)
    long[100 * RATE : 100 * RATE + 4000] += tone(0.5, RATE)
    sf.write(tmp_path / "ten_minutes.wav", long, RATE, subtype="PCM_16")
    result = classify_audio(str(tmp_path / "ten_minutes.wav"))
    assert result.duration_s == pytest.approx(TINY.clip_seconds, abs=0.01)
    assert any("loudest" in n for n in result.notes)


def test_tab_builds_and_handler_raises_gradio_errors(tiny_checkpoint, tmp_path):
    gr = pytest.importorskip("gradio")
    from demos import audio

    with gr.Blocks() as demo:
        audio.build()
    assert any(getattr(fn, "api_name", None) == "classify_audio" for fn in demo.fns.values())
    with pytest.raises(gr.Error):
        audio.classify_handler(None)
    top3, figure, notes, result = audio.classify_handler(audio.examples()[0][0], "layer 1", "head 2")
    assert len(top3) == 3 and figure is not None and "Heard" in notes
    assert audio.redraw(result, "rollout (all layers)", "mean of heads") is not None


# ----------------------------------------------------------------------------------------------
# The shipped model: the same clip, recorded differently, gets the same answer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    folder = checkpoint_dir("audio")
    if not (folder / "model.safetensors").exists():
        pytest.skip(f"no shipped audio checkpoint in {folder} (train it: see training/audio.py)")
    return load_model(folder)


def variants(clip: np.ndarray) -> dict[str, tuple[int, np.ndarray]]:
    """One 8 kHz clip as it might arrive from other recorders."""
    x = torch.from_numpy(clip)
    out = {}
    for rate in (16000, 22050, 44100, 48000):
        out[f"{rate} Hz"] = (rate, torchaudio.functional.resample(x, RATE, rate).numpy())
    out["stereo"] = (RATE, np.stack([clip, 0.8 * clip], axis=1))
    out["1 s silence around"] = (RATE, np.concatenate([silence(1, RATE), clip, silence(1, RATE)]))
    out["20 dB quieter"] = (RATE, 0.1 * clip)
    out["20 dB louder"] = (RATE, 10 * clip)  # float samples may exceed 1
    return out


def test_shipped_model_is_invariant_to_how_a_clip_was_recorded(shipped, shared_data):
    """Take 0 of every digit by every speaker (60 clips of the official test split), recorded
    eight other ways: the class probabilities barely move (total variation <= 0.15), and the
    predicted digit stays the same wherever the model was not torn between two digits (top-2
    margin >= 0.2; at a near tie any change at all can flip it)."""
    from training.audio import load_fsdd, predict, split_indices

    clips = load_fsdd(shared_data)
    chosen = [i for i in split_indices(clips)["test"] if clips.take[i] == 0]
    reference = predict(shipped, [clips.audio[i] for i in chosen], RATE, speeds=(1.0,))  # one pass, as below
    top2 = np.sort(reference, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= 0.2
    assert decided.sum() >= 50, "the shipped model is unsure of too many clean test clips"
    moved, changed = [], []
    for i, ref, sure in zip(chosen, reference, decided, strict=True):
        for name, (rate, samples) in variants(clips.audio[i]).items():
            waveform, _ = prepare_waveform(samples, rate, shipped.config)
            with torch.no_grad():
                probs = shipped(waveform[None]).logits.softmax(-1)[0].numpy()
            distance = 0.5 * np.abs(probs - ref).sum()
            if distance > 0.15:
                moved.append((int(i), name, round(float(distance), 3)))
            if sure and probs.argmax() != ref.argmax():
                changed.append((int(i), name, int(ref.argmax()), int(probs.argmax())))
    assert not moved, f"probabilities moved for (clip, variant, total variation): {moved}"
    assert not changed, f"predictions changed for (clip, variant, before, after): {changed}"
