"""How should the Audio tab listen? The tab hears each clip at three speeds and averages the
model's probabilities (models.audio.LISTENING_SPEEDS). This bench scores other ways of listening on
the leave-one-speaker-out fold models of bench/audio_loso.py (voices the models never heard), with
no retraining: more speeds, a tempo stretch of the spectrogram that keeps the pitch
(training.audio.time_stretch, the augmentation the models trained with), both together, and the
passes combined by the mean of their probabilities or of their log-probabilities (a geometric mean,
which lets one pass that rules a digit out outvote two that half-believe it).

    python -m bench.audio_loso --data-dir DATA --out runs/loso --set max_steps=1000 max_time_s=null
    python -m bench.audio_listening runs/loso [runs/loso_seed7 ...] --data-dir DATA

Each folder holds the six fold checkpoints (<folder>/<speaker>/). Every distinct pass is run once per
fold and shared by the sets that use it. Prints a table per folder and the means over folders, then
one JSON line. Picking the best set on these same folds and calling it an improvement would be
choosing on the test set: a set is worth adopting only if it wins with every folder (seed) by more
than a few clips, and what it costs (each pass is one more forward pass per clip) is worth it.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.audio import LISTENING_SPEEDS, pad_batch, prepare_waveform, speed_changed
from models.checkpoint import load_model
from training.audio import SPEAKERS, load_fsdd, split_indices, time_stretch
from training.common import resolve_data_dir

Pass = tuple[float, float]  # (speed of the waveform, tempo of the spectrogram)
SETS: dict[str, list[Pass]] = {
    "one pass": [(1.0, 1.0)],
    "three speeds (the tab)": [(s, 1.0) for s in LISTENING_SPEEDS],
    "seven speeds, 0.85 to 1.15": [(s, 1.0) for s in (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15)],
    "three tempos, pitch kept": [(1.0, t) for t in (0.9, 1.0, 1.1)],
    "three speeds x three tempos": [(s, t) for s in LISTENING_SPEEDS for t in (0.9, 1.0, 1.1)],
}
MEANS = ("probabilities", "log-probabilities")


@torch.no_grad()
def listen(model, prepared: list[torch.Tensor], passes: list[Pass], batch_size: int = 100) -> dict[Pass, np.ndarray]:
    """Class probabilities (N, classes) of prepared clips for each (speed, tempo) pass."""
    c = model.config
    max_frames = int(c.n_frames(c.max_samples))
    out: dict[Pass, list[np.ndarray]] = {p: [] for p in passes}
    for start in range(0, len(prepared), batch_size):
        for speed in sorted({s for s, _ in passes}):
            heard = [speed_changed(w, speed, c.sample_rate) for w in prepared[start : start + batch_size]]
            spec, frames = model.spectrogram(*pad_batch(heard))
            room = F.pad(spec, (0, max(0, max_frames - spec.size(-1))))  # for a slowed clip's frames
            for tempo in sorted(t for s, t in passes if s == speed):
                if tempo != 1.0:  # read the frames at `tempo`
                    rates = torch.full((spec.size(0),), tempo)
                    stretched, lengths = time_stretch(room, frames, 0.0, max_frames, tempo=rates)
                    logits = model.classify(stretched[..., : int(lengths.max())], lengths).logits
                else:
                    logits = model.classify(spec, frames).logits
                out[(speed, tempo)].append(logits.float().softmax(-1).numpy())
    return {p: np.concatenate(chunks) for p, chunks in out.items()}


def combine(probs: np.ndarray, mean: str) -> np.ndarray:
    """(passes, N, classes) -> (N,) predicted classes, by the mean of probabilities or of logs."""
    if mean == "probabilities":
        return probs.mean(0).argmax(-1)
    return np.log(np.clip(probs, 1e-12, None)).mean(0).argmax(-1)


def score_folder(folder: Path, clips, sets: dict[str, list[Pass]]) -> dict:
    """{set: {mean: {speaker: accuracy}}} over the fold checkpoints in `folder`."""
    passes = sorted({p for members in sets.values() for p in members})
    scores: dict[str, dict[str, dict[str, float]]] = {name: {m: {} for m in MEANS} for name in sets}
    for speaker in SPEAKERS:
        if not (folder / speaker / "model.safetensors").exists():
            continue
        model = load_model(folder / speaker, "cpu").eval()
        index = split_indices(clips, holdout_speaker=speaker)["test"]
        truth = clips.digit[index].astype(int)
        prepared = [prepare_waveform(clips.audio[i], clips.sample_rate, model.config)[0] for i in index]
        heard = listen(model, prepared, passes)
        for name, members in sets.items():
            stacked = np.stack([heard[p] for p in members])
            for m in MEANS:
                scores[name][m][speaker] = round(float((combine(stacked, m) == truth).mean()), 4)
        print(f"  {folder}/{speaker}: scored", flush=True)
    return scores


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="bench.audio_loso --out folders (one per seed)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--json", metavar="PATH", help="also write the result there")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    clips = load_fsdd(resolve_data_dir(args.data_dir))

    folders = {str(f): score_folder(f, clips, SETS) for f in args.folders}
    means = {
        name: {m: [float(np.mean(list(s[name][m].values()))) for s in folders.values()] for m in MEANS} for name in SETS
    }
    print(f"Leave-one-speaker-out accuracy by way of listening, mean of six folds ({', '.join(folders)})")
    print(f"  {'way of listening':<30} {'passes':>6}  {'mean of probabilities':>24}  {'mean of log-probabilities':>26}")
    for name, members in SETS.items():
        cells = ["/".join(f"{100 * a:.2f}" for a in means[name][m]) for m in MEANS]
        print(f"  {name:<30} {len(members):>6}  {cells[0]:>24}  {cells[1]:>26}")
    result = {
        "bench": "audio_listening",
        "sets": {name: [list(p) for p in members] for name, members in SETS.items()},
        "folders": folders,
        "means": means,
        "date": date.today().isoformat(),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
