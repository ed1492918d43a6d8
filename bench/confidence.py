"""How often each tab's "is this something the model knows?" signal (models/confidence.py) fires on
the data the model learned (false alarms) and on inputs that are plainly none of its classes
(detections).

    python -m bench.confidence vision --fit --data-dir DATA   # fit the feature statistics, then measure
    python -m bench.confidence vision --data-dir DATA
    python -m bench.confidence translation --data-dir DATA
    python -m bench.confidence audio --data-dir DATA

Vision: all 10,000 CIFAR-10 test images against drawn pictures of nine kinds that are none of the
ten classes (noise, flat colours, blank pages, gradients, text, house numbers, faces, coffee cups,
stripes and checkerboards). `--fit` computes the training images' feature statistics and writes
them beside the checkpoint (`familiarity.safetensors`; run it after every new vision checkpoint).
Translation: Multi30k test captions in all four directions against `OUT_OF_DOMAIN` sentences.
Audio: the official FSDD test split (takes 0-4) against white noise, tones, hum and chords.
Prints one JSON line; `--json PATH` also writes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.common import hardware, report

# ----------------------------------------------------------------------------------------------
# Pictures that are none of CIFAR-10's classes
# ----------------------------------------------------------------------------------------------

WORDS = ["the", "invoice", "total", "page", "chapter", "meeting", "notes", "tuesday", "report", "summary", "agenda"]


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _noise(rng: np.random.Generator, s: int) -> Image.Image:
    if rng.random() < 0.5:
        a = rng.normal(rng.uniform(60, 200), rng.uniform(20, 90), (s, s, 3))
    else:
        a = rng.uniform(0, 255, (s, s, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _flat(rng: np.random.Generator, s: int) -> Image.Image:
    return Image.new("RGB", (s, s), _colour(rng))


def _blank_page(rng: np.random.Generator, s: int) -> Image.Image:
    paper = rng.uniform(225, 255) + np.array([0, 0, -rng.uniform(0, 10)])
    a = paper + rng.normal(0, rng.uniform(0, 4), (s, s, 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _gradient(rng: np.random.Generator, s: int) -> Image.Image:
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, s)
    t = t[None, :, None] if rng.random() < 0.5 else t[:, None, None]
    return Image.fromarray(np.broadcast_to(start * (1 - t) + end * t, (s, s, 3)).astype(np.uint8))


def _text(rng: np.random.Generator, s: int) -> Image.Image:
    im = Image.new("RGB", (s, s), _colour(rng, 200))
    d = ImageDraw.Draw(im)
    size = int(rng.integers(s // 10, s // 4))
    font, ink = ImageFont.load_default(size=size), _colour(rng, 0, 80)
    y = int(rng.integers(0, size))
    while y < s:
        d.text((int(rng.integers(-size, size)), y), " ".join(rng.choice(WORDS, 4)), fill=ink, font=font)
        y += int(size * 1.3)
    return im


def _house_number(rng: np.random.Generator, s: int) -> Image.Image:
    """One to three digits on a plain plate, as in street-view house numbers (SVHN)."""
    background = _colour(rng)
    ink = tuple(255 - v for v in background) if rng.random() < 0.7 else _colour(rng)
    im = Image.new("RGB", (s, s), background)
    d = ImageDraw.Draw(im)
    size = int(s * rng.uniform(0.45, 0.8))
    number = "".join(str(int(v)) for v in rng.integers(0, 10, int(rng.integers(1, 4))))
    font = ImageFont.load_default(size=size)
    x = (s - d.textlength(number, font=font)) / 2 + rng.normal(0, s / 20)
    d.text((x, (s - size) / 2 - size * 0.1), number, fill=ink, font=font)
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def _face(rng: np.random.Generator, s: int) -> Image.Image:
    im = Image.new("RGB", (s, s), _colour(rng, 60, 240))
    d = ImageDraw.Draw(im)
    skin = [(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)][int(rng.integers(5))]
    hair = [(40, 25, 10), (90, 60, 20), (200, 170, 80), (20, 20, 20), (130, 40, 20)][int(rng.integers(5))]
    k = s / 128

    def p(*xy: float) -> list[float]:
        return [v * k for v in xy]

    d.ellipse(p(24, 4, 104, 60), fill=hair)
    d.rectangle(p(56, 96, 72, 128), fill=skin)  # neck
    d.rectangle(p(20, 112, 108, 128), fill=_colour(rng))  # shirt
    d.ellipse(p(30, 18, 98, 108), fill=skin)
    for x in (48, 80):
        d.ellipse(p(x - 8, 50, x + 8, 60), fill=(255, 255, 255))
        d.ellipse(p(x - 4, 51, x + 4, 59), fill=(50, 30, 20))
        d.line(p(x - 10, 44, x + 10, 42), fill=hair, width=max(1, int(3 * k)))
    d.line(p(64, 58, 60, 76, 66, 78), fill=(150, 90, 60), width=max(1, int(2 * k)))  # nose
    d.arc(p(48, 74, 80, 94), 20, 160, fill=(170, 50, 50), width=max(1, int(4 * k)))  # smile
    return im


def _cup(rng: np.random.Generator, s: int) -> Image.Image:
    im = Image.new("RGB", (s, s), _colour(rng, 150))
    d = ImageDraw.Draw(im)
    k = s / 128

    def p(*xy: float) -> list[float]:
        return [v * k for v in xy]

    colour = _colour(rng)
    d.rectangle(p(0, 84, 128, 128), fill=_colour(rng, 90, 230))  # table
    d.ellipse(p(18, 96, 110, 116), fill=(245, 245, 245), outline=(180, 180, 180))  # saucer
    d.ellipse(p(84, 46, 112, 84), outline=colour, width=max(2, int(8 * k)))  # handle
    d.rectangle(p(32, 34, 92, 104), fill=colour)
    d.ellipse(p(32, 96, 92, 110), fill=colour)
    d.ellipse(p(32, 26, 92, 42), fill=(90, 55, 30))  # coffee
    return im


def _pattern(rng: np.random.Generator, s: int) -> Image.Image:
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    cells = int(rng.integers(2, 12))
    yy, xx = np.mgrid[0:s, 0:s] * cells // s
    mask = ((yy + xx) % 2 == 0) if rng.random() < 0.5 else (xx % 2 == 0)
    return Image.fromarray(np.where(mask[..., None], a, b).astype(np.uint8))


NOT_CIFAR: dict[str, Callable[[np.random.Generator, int], Image.Image]] = {
    "noise": _noise,
    "flat colour": _flat,
    "blank page": _blank_page,
    "gradient": _gradient,
    "text": _text,
    "house number": _house_number,
    "face": _face,
    "coffee cup": _cup,
    "stripes/checks": _pattern,
}


def not_cifar_pictures(kind: str, n: int, seed: int = 0, size: int = 128) -> list[Image.Image]:
    """`n` drawn pictures of one kind from NOT_CIFAR (deterministic for a seed)."""
    rng = np.random.default_rng([seed, list(NOT_CIFAR).index(kind)])
    return [NOT_CIFAR[kind](rng, size) for _ in range(n)]


# ----------------------------------------------------------------------------------------------
# Vision
# ----------------------------------------------------------------------------------------------


def _features(model, pixels: np.ndarray, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, probabilities) of (N, H, W, 3) uint8 pictures at the model's input size."""
    from models.confidence import vit_features

    feats, probs = [], []
    for start in range(0, len(pixels), batch):
        x = torch.from_numpy(pixels[start : start + batch]).permute(0, 3, 1, 2).float() / 255.0
        f, logits = vit_features(model, model.normalize(x))
        feats.append(f)
        probs.append(logits.float().softmax(-1))
    return torch.cat(feats), torch.cat(probs)


def _verdicts(model, pixels: np.ndarray, stats) -> tuple[list, torch.Tensor]:
    from models.confidence import image_verdict

    feats, probs = _features(model, pixels)
    names = model.config.class_names
    return [image_verdict(v, p, f, stats, names) for v, p, f in zip(pixels, probs, feats, strict=True)], probs


def vision(args: argparse.Namespace) -> dict:
    from models.checkpoint import load_model
    from models.confidence import FeatureGaussian
    from models.vision import center_square
    from training.common import resolve_data_dir
    from training.vision import load_cifar10

    folder = Path(args.checkpoint or "checkpoints/vision")
    model = load_model(folder).eval()
    data = load_cifar10(resolve_data_dir(args.data_dir))
    if args.fit:
        # training images only: 45,000 for the Gaussian, 5,000 held out to set the threshold
        order = np.random.default_rng(0).permutation(len(data["train_labels"]))
        fit, held_out = order[:45_000], order[45_000:]
        features = _features(model, data["train_images"][fit])[0]
        stats = FeatureGaussian.fit(features, _features(model, data["train_images"][held_out])[0])
        print(f"wrote {stats.save(folder)} (threshold {stats.threshold:.1f})")
    stats = FeatureGaussian.load(folder)
    if stats is None:
        print(f"no {folder}/familiarity.safetensors: feature distance skipped (run with --fit)")
    verdicts, probs = _verdicts(model, data["test_images"][: args.limit], stats)
    flagged = np.array([not v.known for v in verdicts])
    correct = probs.argmax(-1).numpy() == data["test_labels"][: args.limit]
    side = model.config.img_size
    detection = {}
    for kind in NOT_CIFAR:
        drawn = not_cifar_pictures(kind, args.per_kind, seed=args.seed)
        pictures = np.stack([np.asarray(center_square(p, side)) for p in drawn])
        detection[kind] = round(float(np.mean([not v.known for v in _verdicts(model, pictures, stats)[0]])), 3)
    return {
        "test_images": len(verdicts),
        "false_alarm_rate": round(float(flagged.mean()), 4),
        "flagged_among_correct": round(float(flagged[correct].mean()), 4),
        "flagged_among_wrong": round(float(flagged[~correct].mean()), 4),
        "accuracy_of_accepted": round(float(correct[~flagged].mean()), 4),
        "detection_rate": round(float(np.mean(list(detection.values()))), 4),
        "detection_per_kind": detection,
        "pictures_per_kind": args.per_kind,
        "pictures_seed": args.seed,
        "feature_statistics": stats is not None,
    }


# ----------------------------------------------------------------------------------------------
# Translation
# ----------------------------------------------------------------------------------------------

# Sentences unlike Multi30k's image captions: news, law, science, software, conversation, verse.
OUT_OF_DOMAIN = {
    "en": [
        "The central bank raised interest rates by a quarter of a percentage point on Wednesday.",
        "Pursuant to section 4(b), the lessee shall indemnify the lessor against all claims arising hereunder.",
        "Mitochondrial DNA is inherited almost exclusively through the maternal line in most animals.",
        "Run pip install -r requirements.txt, then export PYTHONPATH=src before calling pytest -x.",
        "Could you tell me whether the invoice I sent last Tuesday has been processed yet?",
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
        "The quarterly earnings report exceeded analysts' expectations despite supply chain disruptions.",
        "Quantum entanglement does not allow information to travel faster than light.",
        "Please reset your password within 24 hours using the link in this email.",
        "The parliament postponed the vote on the budget amendment until next session.",
        "Photosynthesis converts carbon dioxide and water into glucose and oxygen using light energy.",
        "I think, therefore I am, wrote the philosopher in his meditations on first principles.",
        "Error 404: the requested resource could not be found on this server.",
        "The derivative of the natural logarithm of x is one divided by x for all positive x.",
        "Our hypothesis was rejected at the five percent significance level after correction.",
        "Inflation expectations remain anchored, according to the minutes of the latest policy meeting.",
        "The defendant pleaded not guilty to all charges and was released on bail.",
        "Heat the oven to 180 degrees and bake the cake for forty minutes until golden.",
        "What time does the last train to the airport leave on Sundays?",
        "The software update fixes a vulnerability that allowed remote code execution.",
        "Democracy is the worst form of government, except for all the others that have been tried.",
        "The patient presented with acute abdominal pain and elevated white blood cell count.",
        "Neural networks approximate functions by composing affine maps with nonlinear activations.",
        "In accordance with the regulation, personal data must be erased upon request.",
        "Yesterday I realised that I had completely forgotten my grandmother's birthday.",
        "The committee will reconvene after lunch to discuss the remaining items on the agenda.",
        "Hydrogen bonds between water molecules explain its unusually high boiling point.",
        "Click the gear icon, choose advanced settings and disable hardware acceleration.",
        "The treaty was ratified by all member states except two, which abstained.",
        "Honestly, I don't know what you're talking about, and frankly I don't care.",
        "lol idk what u mean tbh, brb in 5",
        "The algorithm runs in O(n log n) time and uses linear auxiliary memory.",
        "Tax returns must be filed electronically by the thirty-first of July.",
        "Several economists warned that the stimulus package could fuel a housing bubble.",
        "To be, or not to be, that is the question.",
        "Despite the ceasefire, sporadic shelling continued along the border overnight.",
        "The enzyme catalyses the hydrolysis of peptide bonds in an acidic environment.",
        "You have been logged out due to inactivity; please sign in again to continue.",
        "The board approved a share buyback programme worth two billion euros.",
        "My flight was cancelled, so I'm stuck at the airport until tomorrow morning.",
    ],
    "de": [
        "Die Zentralbank hat am Mittwoch den Leitzins um einen Viertelprozentpunkt angehoben.",
        "Gemäß Paragraph vier ist der Mieter verpflichtet, die Nebenkosten monatlich zu entrichten.",
        "Bitte setzen Sie Ihr Passwort innerhalb von vierundzwanzig Stunden zurück.",
        "Die Bundesregierung plant eine umfassende Reform des Rentensystems bis zum Jahr 2030.",
        "Können Sie mir sagen, ob meine Rechnung vom letzten Dienstag schon bearbeitet wurde?",
        "Die Quantenmechanik beschreibt das Verhalten von Teilchen auf atomarer Ebene.",
        "Der Angeklagte plädierte auf nicht schuldig und wurde gegen Kaution freigelassen.",
        "Installieren Sie zuerst die Abhängigkeiten und starten Sie dann den Server neu.",
        "Die Inflationsrate ist im dritten Quartal überraschend deutlich gesunken.",
        "Ich denke, also bin ich, schrieb der Philosoph in seinen Meditationen.",
        "Der Ausschuss vertagte die Abstimmung über den Haushaltsentwurf auf die nächste Sitzung.",
        "Datenschutzrechtliche Bestimmungen verlangen die Löschung personenbezogener Daten auf Antrag.",
        "Mein Flug wurde gestrichen, deshalb sitze ich bis morgen früh am Flughafen fest.",
        "Die Aktie verlor nach der Gewinnwarnung fast zwanzig Prozent ihres Wertes.",
        "Wie spät fährt am Sonntag der letzte Zug zum Flughafen?",
    ],
    "fr": [
        "La banque centrale a relevé ses taux directeurs d'un quart de point mercredi.",
        "Conformément à l'article quatre, le locataire doit payer les charges chaque mois.",
        "Veuillez réinitialiser votre mot de passe dans les vingt-quatre heures.",
        "Le gouvernement prévoit une réforme complète du système de retraite d'ici 2030.",
        "Pourriez-vous me dire si ma facture de mardi dernier a déjà été traitée ?",
        "La mécanique quantique décrit le comportement des particules à l'échelle atomique.",
        "L'accusé a plaidé non coupable et a été libéré sous caution.",
        "Installez d'abord les dépendances, puis redémarrez le serveur.",
        "Le taux d'inflation a nettement baissé au troisième trimestre, à la surprise générale.",
        "Je pense, donc je suis, écrivait le philosophe dans ses méditations.",
        "La commission a reporté le vote sur le projet de budget à la prochaine session.",
        "Le règlement exige l'effacement des données personnelles sur simple demande.",
        "Mon vol a été annulé, je suis donc bloqué à l'aéroport jusqu'à demain matin.",
        "L'action a perdu près de vingt pour cent de sa valeur après l'avertissement sur résultats.",
        "À quelle heure part le dernier train pour l'aéroport le dimanche ?",
    ],
}
TARGETS = {"en": ["de", "fr"], "de": ["en"], "fr": ["en"]}


def translation(args: argparse.Namespace) -> dict:
    from demos.translation import translate
    from training.common import resolve_data_dir
    from training.translation import TEST_SPLIT, multi30k_dir, read_split

    folder = multi30k_dir(resolve_data_dir(args.data_dir))

    scores: dict[str, list[dict[str, float]]] = {"captions": [], "other": []}

    def flagged(source: str, target: str, texts: list[str], kind: str) -> list[bool]:
        verdicts = [translate(t, source, target, args.beam).verdict for t in texts]
        scores[kind] += [v.scores for v in verdicts]
        return [not v.known for v in verdicts]

    false_alarms, detections = {}, {}
    for source, targets in TARGETS.items():
        for target in targets:
            captions = read_split(folder, TEST_SPLIT, source, args.limit and args.skip + args.limit)[args.skip :]
            direction = f"{source}-{target}"
            false_alarms[direction] = round(float(np.mean(flagged(source, target, captions, "captions"))), 4)
            detections[direction] = round(float(np.mean(flagged(source, target, OUT_OF_DOMAIN[source], "other"))), 4)
    quantiles = {  # where the thresholds sit: (1%, 5%, 50%, 95%, 99%) of each signal
        kind: {
            name: [round(float(q), 3) for q in np.quantile([s[name] for s in rows], [0.01, 0.05, 0.5, 0.95, 0.99])]
            for name in ("mean_log_prob", "pieces_per_word", "words")
        }
        for kind, rows in scores.items()
    }
    return {
        "signal_quantiles": quantiles,
        "false_alarm_rate": round(float(np.mean(list(false_alarms.values()))), 4),
        "false_alarms_per_direction": false_alarms,
        "captions_per_direction": len(captions),
        "captions_skipped": args.skip,
        "detection_rate": round(float(np.mean(list(detections.values()))), 4),
        "detections_per_direction": detections,
        "out_of_domain_sentences": {lang: len(s) for lang, s in OUT_OF_DOMAIN.items()},
        "beam": args.beam,
    }


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------


def not_digit_sounds(seed: int = 0, rate: int = 16_000, seconds: float = 1.0) -> dict[str, list[np.ndarray]]:
    """Sounds that are no spoken digit, a few of each kind, at several loudnesses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    n = len(t)
    sine = lambda f: np.sin(2 * np.pi * f * t)  # noqa: E731
    return {
        "white noise": [rng.normal(0, a, n) for a in (0.003, 0.03, 0.1, 0.3)],
        "440 Hz tone": [a * sine(440) for a in (0.01, 0.1, 0.5, 0.9)],
        "other tones": [0.3 * sine(f) for f in (100, 250, 1000, 2000, 3000)],
        "mains hum": [0.2 * sum(sine(f0 * k) / k for k in range(1, 8)) for f0 in (50, 60)],
        "chord": [0.2 * sum(sine(f) for f in chord) for chord in ((262, 330, 392), (220, 277, 330))],
        "brown noise": [np.cumsum(rng.normal(0, 0.01, n)) for _ in range(3)],
    }


def audio(args: argparse.Namespace) -> dict:
    from demos.audio import classify_audio
    from demos.common import get_model
    from training.audio import load_fsdd, split_indices
    from training.common import resolve_data_dir

    names = get_model("audio")[0].config.class_names

    clips = load_fsdd(resolve_data_dir(args.data_dir))
    test = split_indices(clips)["test"][: args.limit]
    rejected, wrong = [], []
    for i in test:
        result = classify_audio((clips.sample_rate, clips.audio[i]))
        rejected.append(not result.verdict.known)
        wrong.append(next(iter(result.top3)) != names[clips.digit[i]])
    rejected, wrong = np.array(rejected), np.array(wrong)
    detection = {}
    for kind, sounds in not_digit_sounds().items():
        heard = [classify_audio((16_000, x.astype(np.float32))).verdict for x in sounds]
        detection[kind] = round(float(np.mean([not v.known for v in heard])), 3)
    return {
        "test_clips": len(test),
        "false_rejection_rate": round(float(rejected.mean()), 4),
        "accuracy": round(float(1 - wrong.mean()), 4),
        "rejected_among_wrong": round(float(rejected[wrong].mean()), 4) if wrong.any() else None,
        "detection_rate": round(float(np.mean(list(detection.values()))), 4),
        "detection_per_kind": detection,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["vision", "translation", "audio"])
    p.add_argument("--data-dir", help="the packed datasets (default: $PLAYGROUND_DATA)")
    p.add_argument("--checkpoint", help="vision: checkpoint folder (default: checkpoints/vision)")
    p.add_argument("--fit", action="store_true", help="vision: fit and save the feature statistics first")
    p.add_argument("--limit", type=int, help="at most this many test inputs (per direction for translation)")
    p.add_argument("--per-kind", type=int, default=200, help="vision: drawn pictures per kind")
    p.add_argument("--seed", type=int, default=0, help="vision: which drawn pictures (another seed, other pictures)")
    p.add_argument("--beam", type=int, default=4, help="translation: beam size")
    p.add_argument("--skip", type=int, default=0, help="translation: skip the first N test captions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    result = {"task": args.task, **{"vision": vision, "translation": translation, "audio": audio}[args.task](args)}
    result.update(seconds=round(time.time() - start, 1), hardware=hardware(args.threads), date=date.today().isoformat())
    return report(result, args.json)


if __name__ == "__main__":
    main()
