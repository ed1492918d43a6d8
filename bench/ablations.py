"""What each choice of a recipe buys: the recipe as written, then once per variant with one or a
few settings changed back, each in a fresh process (so "time to target" counts imports and
compile, as the recipe's own figure does). Nothing is exported.

    python -m bench.ablations generation --config training/configs/generation-gpu.yaml --data-dir DATA \\
        --variant adamw optimizer=adamw --variant no-qk-norm model.qk_norm=false \\
        --variant gelu model.activation=gelu --json bench/results/generation_ablations.json

Per run: optimizer steps, training and process wall time, milliseconds per step (validations
included), the wall time from process start to the task's target (generation: val loss <= 1.47),
and the best value of the target's metric with its step. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from training.common import TASKS


def run_one(task: str, config: str, name: str, changes: list[str], args: argparse.Namespace) -> dict:
    log_dir = Path(args.out) / name
    command = [sys.executable, "-m", "training.train", task, "--config", config, "--no-export"]
    command += ["--log-dir", str(log_dir), "--accelerator", args.accelerator]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    settings = [*args.set, *changes]
    if settings:
        command += ["--set", *settings]
    print(f"== {name}: {' '.join(changes) or 'as written'}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        print("\n".join(tail), flush=True)
        return {"name": name, "changes": changes, "failed": f"exit code {done.returncode}", "log_tail": tail}
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    metric = next(iter(summary["target"] or {}), None)  # the task's target metric, as train.py names it
    rows = [json.loads(line) for line in (log_dir / task / "validation.jsonl").read_text().splitlines() if line]
    scored = [r for r in rows if metric in r]
    best = min(scored, key=lambda r: r[metric]) if scored else None
    return {
        "name": name,
        "changes": changes,
        "steps": summary["steps"],
        "train_wall_s": summary["train_wall_s"],
        "process_wall_s": summary["process_wall_s"],
        "ms_per_step": round(1000 * summary["train_wall_s"] / max(1, summary["steps"]), 1),
        "time_to_target_s": summary["time_to_target_s"],
        "target": summary["target"],
        "best": {"metric": metric, "value": round(best[metric], 4), "step": best["step"]} if best else None,
        "hardware": summary["hardware"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--config", required=True, help="the recipe (a YAML file in training/configs/)")
    p.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a name, then the settings that differ from the recipe (repeat for each variant)",
    )
    p.add_argument("--data-dir", help="folder with the packed datasets (default: $PLAYGROUND_DATA)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--out", default="runs/ablations", help="each run's logs go to <out>/<name>/")
    p.add_argument("--json", metavar="PATH", help="also write the result there")
    args = p.parse_args(argv)
    names = ["recipe"] + [v[0] for v in args.variant]
    if len(set(names)) != len(names):
        p.error(f"variant names must differ from each other and from 'recipe': {names}")
    bad = [item for v in args.variant for item in v[1:] if "=" not in item]
    if bad or any(len(v) < 2 for v in args.variant):
        p.error("each --variant is a name followed by at least one KEY=VALUE")

    runs = [run_one(args.task, args.config, "recipe", [], args)]
    runs += [run_one(args.task, args.config, v[0], v[1:], args) for v in args.variant]

    print(f"\n{args.task} ({args.config}): each variant against the recipe")
    print(f"  {'':<22} {'steps':>6} {'ms/step':>8} {'to target s':>12} {'best':>8} {'at step':>8}")
    for r in runs:
        if "failed" in r:
            print(f"  {r['name']:<22} failed: {r['failed']}")
            continue
        best = r["best"] or {"value": float("nan"), "step": -1}
        reached = f"{r['time_to_target_s']:.1f}" if r["time_to_target_s"] is not None else "not reached"
        print(
            f"  {r['name']:<22} {r['steps']:>6} {r['ms_per_step']:>8.1f} {reached:>12} "
            f"{best['value']:>8.4f} {best['step']:>8}"
        )
    result = {"task": args.task, "config": args.config, "runs": runs, "date": date.today().isoformat()}
    print(json.dumps(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
