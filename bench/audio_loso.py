"""Leave-one-speaker-out accuracy of the audio model: for each FSDD speaker, train on the other
five (training.train with `holdout_speaker`) and score all 500 clips of the held-out one
(training.audio.evaluate: as the tab answers, the clip heard at three speeds, and with one pass).
Users' voices are not in the dataset: this is the honest estimate of how the Audio tab does on a
new voice.

    python -m bench.audio_loso --data-dir DATA                        # 6 folds, cpu config
    python -m bench.audio_loso --speakers theo --set max_time_s=300             # one shorter fold
    python -m bench.audio_loso --config training/configs/audio-gpu.yaml         # on the GPU
    python -m bench.audio_loso --out runs/audio_loso --score-only               # score the folds again

Each fold's checkpoint lands in <out>/<speaker>/ (and remembers its held-out speaker, so
`python -m training.evaluate audio --checkpoint <out>/<speaker>` scores it again).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import date
from pathlib import Path

import numpy as np

from training import train
from training.audio import SPEAKERS, evaluate
from training.common import resolve_data_dir


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(Path(__file__).parent.parent / "training/configs/audio-cpu.yaml"))
    p.add_argument("--speakers", nargs="*", default=list(SPEAKERS), choices=SPEAKERS)
    p.add_argument("--data-dir", help="folder with fsdd_8k_int16.npz (default: $PLAYGROUND_DATA, else download)")
    p.add_argument("--out", default="runs/audio_loso", help="one checkpoint folder per held-out speaker")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every fold")
    p.add_argument("--score-only", action="store_true", help="score the fold checkpoints already in --out again")
    p.add_argument("--json", metavar="PATH", help="also write the result there")
    args = p.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)

    folds = {}
    for speaker in args.speakers:
        folder = Path(args.out) / speaker
        train_args = ["audio", "--config", args.config, "--out", str(folder), "--log-dir", str(folder / "logs")]
        train_args += ["--accelerator", args.accelerator, "--set", f"holdout_speaker={speaker}", *args.set]
        if data_dir:
            train_args += ["--data-dir", str(data_dir)]
        if args.score_only:
            summary = json.loads((folder / "config.json").read_text())["meta"]["training"]
        else:
            summary = train.main(train_args)
        metrics = evaluate(folder, data_dir, device="cuda" if args.accelerator == "gpu" else "cpu")
        folds[speaker] = {
            "accuracy": metrics["accuracy"],
            "accuracy_one_speed": metrics["accuracy_one_speed"],
            "per_class": metrics["per_class"],
            "steps": summary["steps"],
            "train_wall_s": summary["train_wall_s"],
            "hardware": summary["hardware"],
        }
        print(f"held out {speaker}: accuracy {metrics['accuracy']:.4f}", flush=True)

    accuracies = [f["accuracy"] for f in folds.values()]
    result = {
        "bench": "audio_loso",
        "config": os.path.relpath(args.config),
        "overrides": args.set,
        "folds": folds,
        "mean_accuracy": round(float(np.mean(accuracies)), 4),
        "mean_accuracy_one_speed": round(float(np.mean([f["accuracy_one_speed"] for f in folds.values()])), 4),
        "speakers_run": len(folds),
        "date": date.today().isoformat(),
    }
    print(f"Leave-one-speaker-out accuracy ({args.config} {' '.join(args.set)})")
    print(f"  {'held-out speaker':<18} {'accuracy':>9} {'one speed':>10} {'steps':>7} {'train s':>8}")
    for speaker, fold in folds.items():
        row = f"{fold['accuracy']:>9.4f} {fold['accuracy_one_speed']:>10.4f} {fold['steps']:>7}"
        print(f"  {speaker:<18} {row} {fold['train_wall_s']:>8.0f}")
    print(f"  {'mean':<18} {result['mean_accuracy']:>9.4f} {result['mean_accuracy_one_speed']:>10.4f}")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
