"""Pick the faster way to compile a recipe from two short step checks on the same machine, so that
the long run that follows in the next call uses it without anyone reading the checks first (a lent
GPU machine goes back after half a minute idle, and starting another costs minutes of the session).

    python -m scripts.compile_choice --baseline check-vision.out \\
        --candidate check-vision-cudagraphs.out compile_mode=reduce-overhead --write runs/gpu-choices/vision.sets

Each .out is the output of one `training.train` run (its last JSON line is the run's summary, with
`step_ms`, the steady-state time per step). The candidate's settings are written to --write (one
KEY=VALUE per line, for `train --set`) only if its run finished, its validation loss is finite and
not worse than the baseline's by more than LOSS_SLACK, and its step is at least MIN_GAIN faster;
otherwise the file is left empty and the recipe runs as written. Prints one line saying which and why.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

MIN_GAIN = 0.10  # the candidate must save at least this share of the step time
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


def choose(baseline: dict | None, candidate: dict | None) -> tuple[bool, str]:
    """(take the candidate?, the reason in a sentence)."""
    if baseline is None or baseline.get("step_ms") is None:
        return False, "the baseline check gave no step time, so there is nothing to compare with"
    if candidate is None:
        return False, "the candidate check did not finish"
    if candidate.get("step_ms") is None:
        return False, "the candidate check gave no step time"
    base_ms, cand_ms = float(baseline["step_ms"]), float(candidate["step_ms"])
    base_loss, cand_loss = validation_loss(baseline), validation_loss(candidate)
    if cand_loss is None or not math.isfinite(cand_loss):
        return False, f"the candidate's validation loss is {cand_loss}"
    if base_loss is not None and cand_loss > base_loss * (1 + LOSS_SLACK):
        return False, f"the candidate's validation loss {cand_loss:.4f} is worse than {base_loss:.4f}"
    if cand_ms > base_ms * (1 - MIN_GAIN):
        return False, f"the candidate takes {cand_ms:.2f} ms per step against {base_ms:.2f}: not enough faster"
    return True, f"the candidate takes {cand_ms:.2f} ms per step against {base_ms:.2f} ({base_ms / cand_ms:.2f}x)"


def main(argv: list[str] | None = None) -> bool:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="output of the recipe as written")
    p.add_argument(
        "--candidate", nargs="+", required=True, metavar=("OUTPUT", "KEY=VALUE"), help="its output, then its settings"
    )
    p.add_argument("--write", type=Path, required=True, help="file for the chosen settings (empty: as written)")
    args = p.parse_args(argv)
    output, settings = Path(args.candidate[0]), args.candidate[1:]
    take, reason = choose(summary(args.baseline), summary(output))
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text("".join(f"{s}\n" for s in settings) if take else "")
    print(f"compile choice: {' '.join(settings) if take else 'the recipe as written'}: {reason}", flush=True)
    return take


if __name__ == "__main__":
    main()
