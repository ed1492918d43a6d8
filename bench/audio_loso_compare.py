"""Compare leave-one-speaker-out results (bench/audio_loso.py's JSON files) with a baseline, seed
by seed: a change to the audio recipe counts only if it beats the baseline trained with the same
seed, on the mean and fold by fold. Prints a Markdown table (the README's "unheard voices" table).

    python -m bench.audio_loso_compare \\
        --baseline bench/results/audio_loso_cpu_1000steps_convstem.json \\
                   bench/results/audio_loso_cpu_1000steps_convstem_seed7.json \\
        --try "third conv" bench/results/audio_loso_cpu_1000steps_convstem3.json \\
                           bench/results/audio_loso_cpu_1000steps_convstem3_seed7.json

A result's seed is read from its overrides (`seed=7`), else the training default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.common import TrainingConfig

RUN_KEYS = ("max_steps", "max_time_s", "seed")  # overrides that say how long and which seed, not what changed


def seed_of(result: dict) -> int:
    for item in result["overrides"]:
        key, _, value = item.partition("=")
        if key == "seed":
            return int(value)
    return TrainingConfig.seed


def changes(result: dict) -> str:
    """The overrides that change the recipe (not its length or seed)."""
    return " ".join(item for item in result["overrides"] if item.partition("=")[0] not in RUN_KEYS)


def compare(baseline: list[dict], tried: list[dict]) -> dict:
    """Per seed: the try's mean and the baseline's over the folds both ran, and how many of those
    folds the try scored the same or better; then the means over the seeds."""
    by_seed = {seed_of(r): r for r in baseline}
    seeds, better, folds = [], 0, 0
    for result in tried:
        seed = seed_of(result)
        if seed not in by_seed:
            raise ValueError(f"no baseline with seed {seed} (baseline seeds: {sorted(by_seed)})")
        base = by_seed[seed]["folds"]
        shared = [s for s in result["folds"] if s in base]
        if not shared:
            raise ValueError(f"seed {seed}: the try and the baseline share no held-out speaker")
        mean = sum(result["folds"][s]["accuracy"] for s in shared) / len(shared)
        base_mean = sum(base[s]["accuracy"] for s in shared) / len(shared)
        better += sum(result["folds"][s]["accuracy"] >= base[s]["accuracy"] for s in shared)
        folds += len(shared)
        seeds.append({"seed": seed, "accuracy": mean, "baseline": base_mean})
    return {
        "seeds": seeds,
        "accuracy": sum(s["accuracy"] for s in seeds) / len(seeds),
        "baseline": sum(s["baseline"] for s in seeds) / len(seeds),
        "same_or_better": better,
        "folds": folds,
    }


def table(baseline: list[dict], tries: list[tuple[str, list[dict]]]) -> str:
    rows = [
        "| change | overrides | per seed (baseline) | mean | vs baseline | folds same or better |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for label, tried in tries:
        c = compare(baseline, tried)
        per_seed = ", ".join(
            f"{s['seed']}: {100 * s['accuracy']:.1f}% ({100 * s['baseline']:.1f}%)" for s in c["seeds"]
        )
        delta = 100 * (c["accuracy"] - c["baseline"])
        overrides = f"`{changes(tried[0])}`" if changes(tried[0]) else "(none)"
        rows.append(
            f"| {label} | {overrides} | {per_seed} | {100 * c['accuracy']:.1f}% | {delta:+.1f} "
            f"| {c['same_or_better']} of {c['folds']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", nargs="+", required=True, metavar="JSON", help="one result per seed")
    p.add_argument(
        "--try",
        dest="tries",
        nargs="+",
        action="append",
        default=[],
        metavar="LABEL JSON",
        help="a label, then one result per seed; repeat for each change",
    )
    args = p.parse_args(argv)

    def load(paths: list[str]) -> list[dict]:
        return [json.loads(Path(path).read_text()) for path in paths]

    for item in args.tries:
        if len(item) < 2:
            p.error(f"--try {item[0]!r}: a label, then at least one JSON file")
    out = table(load(args.baseline), [(item[0], load(item[1:])) for item in args.tries])
    print(out)
    return out


if __name__ == "__main__":
    main()
