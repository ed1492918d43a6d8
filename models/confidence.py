"""Is this input something the model knows? Plain signals, one per model, that a tab shows beside
an answer, so that a face is not called "truck 87%" and a hiss is not called "seven".

A classifier's softmax always sums to one over the classes it knows, so its top probability says
little about inputs unlike its training data: on pictures of faces, text or noise our small
CIFAR-10 ViT is as sure as on its own test images (`bench/confidence.py` measures it). So each
model gets signals that look at the input itself or at the model's features:

- Image: a nearly uniform picture (blank page, flat colour), pixel noise (neighbouring pixels
  uncorrelated, unlike any photo), features far from the training images' (the Mahalanobis
  distance of Lee et al. 2018 under one Gaussian fitted to training-image features, its threshold
  a high quantile on held-out training images), or a low top probability.
- Translation: long input, many unknown characters, words split into many pieces, or a low mean
  log-probability of the model's own translation (what a caption-trained model finds unlikely).
- Audio: hiss (a flat spectrum), a rumble (wind or handling noise: nearly all of the power below
  the lowest formant of speech), a steady sound such as a tone or hum (a spoken word changes its
  spectrum over time) or a low top probability.

Thresholds come from measurements on the test splits and on inputs made to be none of the
classes; `bench/confidence.py` prints the false-alarm and detection rates behind each.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass
class Verdict:
    """Whether the model should be trusted on an input, and if not, why (sentences for a person)."""

    known: bool = True
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # the signals, for benches and tests

    def flag(self, reason: str) -> None:
        self.known = False
        self.reasons.append(reason)


# ----------------------------------------------------------------------------------------------
# Image
# ----------------------------------------------------------------------------------------------

FLAT_STD = 4.0  # grey-level standard deviation (0..255) of the 32x32 view; CIFAR test's lowest is ~11
NOISE_CORRELATION = 0.4  # neighbouring-pixel correlation; CIFAR test's lowest 0.1% is ~0.6, noise ~0
LOW_TOP_PROBABILITY = 0.35  # below this the model itself is unsure (about 2% of CIFAR-10 test images)
STATS_FILE = "familiarity.safetensors"


def pixel_statistics(view: np.ndarray) -> tuple[float, float]:
    """(grey-level standard deviation, correlation of neighbouring pixels) of an (H, W, 3) uint8
    picture. Photos are smooth almost everywhere (correlation 0.6 to 1); noise is not (about 0)."""
    grey = np.asarray(view, dtype=np.float64).mean(-1)
    grey = grey - grey.mean()
    variance = (grey**2).mean()
    if variance < 1e-9:
        return 0.0, 1.0
    across = (grey[:, 1:] * grey[:, :-1]).mean() + (grey[1:, :] * grey[:-1, :]).mean()
    return float(np.sqrt(variance)), float(across / (2 * variance))


@torch.no_grad()
def vit_features(model, images: Tensor, attentions: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(features (B, 2 * dim), logits (B, classes)) of a VisionClassifier (timm ViT) on normalised
    images. Features: the patch tokens' mean as embedded (stem and positions) and after the first
    block, side by side: what the picture is made of, before the deeper blocks map it to a class.
    Deeper features miss drawn pictures: the 5.7M-parameter model maps a cartoon face close to its
    classes' photos there (bench/confidence.py's drawn faces: the distance alone caught 30% from
    every block's mean and the CLS state, 98% from these two, at 6-7% false alarms on CIFAR-10).
    Given a list as `attentions`, the same pass appends each block's attention weights to it, so a
    tab that shows the maps and checks the picture runs the model once."""
    from contextlib import nullcontext

    from models.vision import _WEIGHTS_LOCK, _capture_attention  # here: models.vision imports timm (~2 s)

    vit = model.vit
    capture = _capture_attention(vit) if attentions is not None else nullcontext([])
    with _WEIGHTS_LOCK, capture as captured:  # not while another request's hooks are on these blocks
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        prefix = getattr(vit, "num_prefix_tokens", 1)
        embedded = x[:, prefix:].mean(1)
        x = vit.blocks[0](x)
        first_block = x[:, prefix:].mean(1)
        logits = vit.forward_head(vit.norm(vit.blocks[1:](x)))  # blocks: an nn.Sequential
    if attentions is not None:
        attentions.extend(captured)
    return torch.cat([embedded, first_block], dim=1), logits


@dataclass
class FeatureGaussian:
    """One Gaussian over training-image features: the Mahalanobis distance to its mean says how
    unlike the training images an input is; `threshold` is a high quantile of held-out training
    images' distances."""

    mean: Tensor  # (d,)
    precision: Tensor  # (d, d): inverse covariance
    threshold: float

    @classmethod
    def fit(cls, features: Tensor, held_out: Tensor, quantile: float = 0.95) -> FeatureGaussian:
        f = features.double()
        mean = f.mean(0)
        centred = f - mean
        covariance = centred.T @ centred / len(f)
        ridge = 1e-4 * covariance.diagonal().mean() * torch.eye(len(mean), dtype=f.dtype)
        stats = cls(mean.float(), torch.linalg.inv(covariance + ridge).float(), 0.0)
        stats.threshold = float(torch.quantile(stats.distance(held_out), quantile))
        return stats

    def distance(self, features: Tensor) -> Tensor:
        """Squared Mahalanobis distance of each row of (B, d) features."""
        d = features.float() - self.mean
        return ((d @ self.precision) * d).sum(-1)

    def save(self, folder: str | Path) -> Path:
        """Beside the checkpoint's weights in `folder`, with a fingerprint of them (see `load`)."""
        from safetensors.torch import save_file

        path = Path(folder) / STATS_FILE
        tensors = {"mean": self.mean, "precision": self.precision, "threshold": torch.tensor([self.threshold])}
        metadata = {"model_sha256": _weights_hash(folder)}
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureGaussian | None:
        """The statistics saved beside a checkpoint, or None when there are none or when they were
        fitted for other weights (a retrained model needs `bench.confidence vision --fit` again)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(folder) / STATS_FILE
        if not path.exists():
            return None
        with safe_open(str(path), "pt") as f:
            fitted_for = (f.metadata() or {}).get("model_sha256")
        if fitted_for != _weights_hash(folder):
            warnings.warn(f"{path} was fitted for other weights; the feature-distance signal is off", stacklevel=2)
            return None
        t = load_file(str(path))
        return cls(t["mean"], t["precision"], float(t["threshold"][0]))


def _weights_hash(folder: str | Path) -> str:
    weights = Path(folder) / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else ""


def image_verdict(
    view: np.ndarray, probs: Tensor, features: Tensor | None, stats: FeatureGaussian | None, classes: list[str]
) -> Verdict:
    """Whether a picture looks like one the model was trained on. `view`: the (H, W, 3) uint8
    square the model saw; `probs`: its class probabilities; `features` from `vit_features` and
    `stats` fitted on training images (either None: that signal is skipped)."""
    verdict = Verdict()
    std, correlation = pixel_statistics(view)
    top = float(probs.max())
    verdict.scores.update(pixel_std=std, neighbour_correlation=correlation, top_probability=top)
    only = f"The model only knows these {len(classes)} classes: {', '.join(classes)}"
    if std < FLAT_STD:
        verdict.flag(f"This picture is almost one flat colour, with nothing to recognise. {only}.")
    elif correlation < NOISE_CORRELATION:
        verdict.flag(f"This picture looks like random noise, not a photo. {only}.")
    if features is not None and stats is not None:
        distance = float(stats.distance(features.reshape(1, -1))[0])
        verdict.scores["feature_distance"] = distance
        verdict.scores["feature_threshold"] = stats.threshold
        if distance > stats.threshold and verdict.known:
            unlike = "This picture looks unlike the photos the model learned from: take its answer with care."
            verdict.flag(f"{unlike} {only}.")
    if top < LOW_TOP_PROBABILITY and verdict.known:
        verdict.flag(f"The model is unsure (its top class has only {top:.0%}). {only}.")
    return verdict


_stats: dict[str, FeatureGaussian | None] = {}


def read_picture(
    model, view: np.ndarray, folder: str | Path, need_weights: bool = False
) -> tuple[Verdict, Tensor, list[Tensor]]:
    """One pass of our CIFAR-10 VisionClassifier over the (H, W, 3) uint8 square it saw: the
    `image_verdict` (with the feature statistics saved beside its checkpoint in `folder`, read
    once; none: that signal is skipped), the logits (1, classes) and, with `need_weights`, each
    block's attention weights (else an empty list)."""
    key = str(Path(folder).resolve())
    if key not in _stats:
        _stats[key] = FeatureGaussian.load(folder)
    x = torch.from_numpy(np.array(view, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    attentions: list[Tensor] | None = [] if need_weights else None
    features, logits = vit_features(model, model.normalize(x), attentions)
    verdict = image_verdict(view, logits.float().softmax(-1)[0], features[0], _stats[key], model.config.class_names)
    return verdict, logits, attentions or []


def picture_verdict(model, view: np.ndarray, folder: str | Path) -> Verdict:
    """`read_picture`'s verdict alone."""
    return read_picture(model, view, folder)[0]


# ----------------------------------------------------------------------------------------------
# Translation
# ----------------------------------------------------------------------------------------------

MAX_CAPTION_WORDS = 40  # Multi30k test captions: median 11 words, 99% at most 24
MAX_UNKNOWN_SHARE = 0.1  # characters the tokenizer has never seen
MAX_PIECES_PER_WORD = 2.6  # test captions: 99% under 2.3 pieces per word; other text: median 2.4
# nats per output token (with </s>) of the model's own translation, read with the shipped model from
# the first 250 test captions of each direction and bench.confidence.OUT_OF_DOMAIN: 99% of the
# captions score above -1.08, 95% of the other text below -1.06 (99% below -0.91). The two overlap,
# so the line sits at the captions' 1% quantile: few false alarms, most other text caught.
MIN_MEAN_LOG_PROB = -1.08


@torch.no_grad()
def mean_log_prob(logits: Tensor, targets: list[int]) -> float:
    """Mean log-probability (nats per token) of `targets` under decoder logits (T, vocab) that were
    computed with teacher forcing: row t predicts targets[t]."""
    log_probs = logits.float().log_softmax(-1)
    picked = log_probs[torch.arange(len(targets)), torch.tensor(targets)]
    return float(picked.mean())


@torch.no_grad()
def caption_verdict(model, tokenizer, text: str, source_ids: list[int], output: list[int], target_id: int) -> Verdict:
    """`translation_verdict` for an EncoderDecoder's beam-search `output` (ids without the language
    token and </s>) of `source_ids` (ending with </s>), read from `text` by `tokenizer`."""
    from models.translation import EOS_ID, UNK_ID

    encoding = tokenizer.encode(text)
    unknown = sum(b - a for i, (a, b) in zip(encoding.ids, encoding.offsets, strict=True) if i == UNK_ID)
    logits = model(torch.tensor([source_ids]), torch.tensor([[target_id, *output]])).logits[0]
    return translation_verdict(
        words=len(text.split()),
        pieces=len(source_ids) - 1,
        unknown_chars=unknown,
        chars=len("".join(text.split())),
        log_prob=mean_log_prob(logits, [*output, EOS_ID]),
    )


def translation_verdict(words: int, pieces: int, unknown_chars: int, chars: int, log_prob: float | None) -> Verdict:
    """Whether a source text looks like the captions the model learned from, by its length in
    words, subword pieces per word, the share of unknown characters and the mean log-probability
    of the model's translation (None: skipped)."""
    verdict = Verdict()
    per_word = pieces / max(words, 1)
    unknown = unknown_chars / max(chars, 1)
    verdict.scores.update(words=words, pieces_per_word=per_word, unknown_share=unknown)
    intro = "The model learned from short image captions (Multi30k), and this text is"
    if words > MAX_CAPTION_WORDS:
        verdict.flag(f"{intro} long ({words} words; captions have about 11): expect a rough translation.")
    if unknown > MAX_UNKNOWN_SHARE:
        verdict.flag(f"{intro} full of characters it has never seen ({unknown:.0%}): expect a rough translation.")
    if per_word > MAX_PIECES_PER_WORD:
        verdict.flag(
            f"{intro} full of words it does not know (split into {per_word:.1f} pieces each): "
            "expect a rough translation."
        )
    if log_prob is not None:
        verdict.scores["mean_log_prob"] = log_prob
        if log_prob < MIN_MEAN_LOG_PROB and verdict.known:
            verdict.flag(
                f"The model is unsure of this translation (mean log-probability {log_prob:.2f} per token; "
                "it learned from short image captions)."
            )
    return verdict


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------

NOISE_FLATNESS = 0.45  # spectral flatness: white noise ~0.55, FSDD test clips at most ~0.36
STEADY_CHANGE = 0.9  # spectral change over time: tones and hum < 0.7, FSDD test clips > 1.1
# spectral centroid: speech's first formant is above ~250 Hz, and all 3,000 FSDD clips have their
# centroid at 274 Hz or above; brown noise (a random walk, like wind on a microphone) sits below 10 Hz
RUMBLE_CENTROID_HZ = 150.0
LOW_DIGIT_PROBABILITY = 0.5  # below this the model is unsure (about 1% of FSDD test clips)


def _power_frames(waveform: np.ndarray, size: int = 256) -> np.ndarray:
    """Hann-windowed power spectra of consecutive `size`-sample frames, (frames, size // 2 + 1)."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    n = max(1, len(x) // size)
    x = np.pad(x, (0, max(0, n * size - len(x))))[: n * size].reshape(n, size)
    return np.abs(np.fft.rfft(x * np.hanning(size), axis=1)) ** 2 + 1e-12


def spectral_signals(waveform: np.ndarray, sample_rate: int = 8000) -> tuple[float, float, float]:
    """(spectral flatness, spectral change, spectral centroid in Hz) of a prepared waveform, over
    its frames with sound.

    Flatness is the geometric over the arithmetic mean of the power spectrum (1 for white noise,
    near 0 for speech and tones), median over frames. Change is the RMS deviation of each frame's
    log spectrum (level removed) from the clip's mean log spectrum: a word moves through different
    sounds, a tone or a hum stays put. The centroid is the power-weighted mean frequency of all
    those frames together."""
    power = _power_frames(waveform)
    energy = power.sum(1)
    power = power[energy >= energy.max() * 1e-3]
    flatness = np.exp(np.log(power).mean(1)) / power.mean(1)
    # within 60 dB of each frame's peak, as a spectrogram shows it: below that, rounding and
    # resampling residue would dominate the log spectrum of a pure tone
    log_power = np.log(np.maximum(power, power.max(1, keepdims=True) * 1e-6))
    log_power -= log_power.mean(1, keepdims=True)
    change = np.sqrt(((log_power - log_power.mean(0)) ** 2).mean())
    hz = np.fft.rfftfreq(2 * (power.shape[1] - 1), d=1.0 / sample_rate)
    centroid = (power * hz).sum() / power.sum()
    return float(np.median(flatness)), float(change), float(centroid)


def audio_verdict(waveform: np.ndarray, probs: Tensor, sample_rate: int = 8000) -> Verdict:
    """Whether a prepared clip (at `sample_rate`, loudness-normalised) sounds like a spoken digit."""
    verdict = Verdict()
    flatness, change, centroid = spectral_signals(waveform, sample_rate)
    top = float(probs.max())
    verdict.scores.update(flatness=flatness, change=change, centroid_hz=centroid, top_probability=top)
    if flatness > NOISE_FLATNESS:
        verdict.flag("No clear digit heard: this sounds like noise (hiss), not a spoken word.")
    elif change < STEADY_CHANGE:
        verdict.flag("No clear digit heard: this is a steady sound (a tone or a hum), not a spoken word.")
    elif centroid < RUMBLE_CENTROID_HZ:
        verdict.flag(
            "No clear digit heard: this is a low rumble (like wind or a bumped microphone), not a spoken word."
        )
    elif top < LOW_DIGIT_PROBABILITY:
        verdict.flag(f"No clear digit heard: the model is unsure (its best guess has only {top:.0%}).")
    return verdict
