"""Pick the fastest way to run a recipe from short step checks on the same machine, so that the
long run that follows in the next call uses it without anyone reading the checks first (a lent
GPU machine goes back after half a minute idle, and starting another costs minutes of the session).

    python -m scripts.compile_choice --baseline check-vision.out \\
        --candidate check-vision-cudagraphs.out compile_mode=reduce-overhead --write runs/gpu-choices/vision.sets
    python -m scripts.compile_choice --baseline check-generation.out --to-steps 700 \\
        --candidate check-generation-cudagraphs.out compile_mode=reduce-overhead \\
        --candidate check-generation-eager.out compile=false --write runs/gpu-choices/generation.sets

Each .out is the output of one `training.train` run: its last JSON line is the run's summary, with
`steps`, `step_ms` (the steady-state time per step) and `process_wall_s` (from process start to the
end: imports, data, the first step's compile, the steps, the last validation). What is compared:

- by default the step time: right for a run timed by its training budget (vision: max_time_s counts
  training after the compiling step, so a faster step is more steps);
- with --to-steps N, the time from process start to step N: the check's own wall time, extended by
  its steady step to N steps. Right for a run timed from process start (generation's target: val
  loss 1.47 within 40 s, compile included), where a compile that costs 20 s may not pay for itself
  over a few hundred steps.

A candidate qualifies if its run finished, its validation loss is finite and not worse than the
baseline's by more than LOSS_SLACK, and it saves at least MIN_GAIN of the baseline's time; the best
qualifying candidate's settings are written to --write (one KEY=VALUE per line, for `train --set`),
otherwise the file is left empty and the recipe runs as written. Prints one line per candidate.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

MIN_GAIN = 0.10  # the candidate must save at least this share of the baseline's time
LOSS_SLACK = 0.05  # relative: same seed, same data order, the loss after the check should barely move


def summary(path: Path) -> dict | None:
    """The last line of a train run's output that parses as its JSON summary; None if it has none."""
    if not path.exists():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(found, dict) and "steps" in found:
                return found
    return None


def validation_loss(run: dict) -> float | None:
    value = (run.get("last_validation") or {}).get("val/loss")
    return None if value is None else float(value)


def cost(run: dict, to_steps: int | None) -> tuple[float, str] | None:
    """What is compared (lower is better) and how it reads; None if the run cannot say."""
    if run.get("step_ms") is None:
        return None
    step_ms = float(run["step_ms"])
    if to_steps is None:
        return step_ms, f"{step_ms:.2f} ms per step"
    if run.get("process_wall_s") is None or not run.get("steps"):
        return None
    wall, steps = float(run["process_wall_s"]), int(run["steps"])
    total = wall + (to_steps - steps) * step_ms / 1000
    start = total - to_steps * step_ms / 1000
    return total, f"{total:.1f} s to step {to_steps} (~{start:.1f} s to start and compile, {step_ms:.2f} ms a step)"


def choose(baseline: dict | None, candidate: dict | None, to_steps: int | None = None) -> tuple[bool, str]:
    """(take the candidate over the baseline?, the reason in a sentence)."""
    base = None if baseline is None else cost(baseline, to_steps)
    if base is None:
        return False, "the baseline check gave no time, so there is nothing to compare with"
    if candidate is None:
        return False, "the candidate check did not finish"
    cand = cost(candidate, to_steps)
    if cand is None:
        return False, "the candidate check gave no time"
    base_loss, cand_loss = validation_loss(baseline), validation_loss(candidate)
    if cand_loss is None or not math.isfinite(cand_loss):
        return False, f"the candidate's validation loss is {cand_loss}"
    if base_loss is not None and cand_loss > base_loss * (1 + LOSS_SLACK):
        return False, f"the candidate's validation loss {cand_loss:.4f} is worse than {base_loss:.4f}"
    if cand[0] > base[0] * (1 - MIN_GAIN):
        return False, f"the candidate takes {cand[1]} against {base[1]}: not enough faster"
    return True, f"the candidate takes {cand[1]} against {base[1]} ({base[0] / cand[0]:.2f}x)"


def main(argv: list[str] | None = None) -> list[str] | None:
    """Writes and returns the chosen candidate's settings; None (and an empty file) for the recipe."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="output of the recipe as written")
    p.add_argument(
        "--candidate",
        nargs="+",
        action="append",
        required=True,
        metavar=("OUTPUT", "KEY=VALUE"),
        help="a candidate's output, then its settings (repeat for several)",
    )
    p.add_argument("--to-steps", type=int, help="compare the time from process start to this step")
    p.add_argument("--write", type=Path, required=True, help="file for the chosen settings (empty: as written)")
    args = p.parse_args(argv)
    baseline = summary(args.baseline)
    best: tuple[float, list[str]] | None = None
    for output, *settings in args.candidate:
        candidate = summary(Path(output))
        take, reason = choose(baseline, candidate, args.to_steps)
        print(f"compile choice, {' '.join(settings)}: {'qualifies' if take else 'no'}: {reason}", flush=True)
        if take:
            value = cost(candidate, args.to_steps)[0]
            if best is None or value < best[0]:
                best = (value, settings)
    chosen = None if best is None else best[1]
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text("".join(f"{s}\n" for s in chosen or []))
    print(f"compile choice: {' '.join(chosen) if chosen else 'the recipe as written'}", flush=True)
    return chosen


if __name__ == "__main__":
    main()
