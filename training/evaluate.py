"""Score a checkpoint on its task's held-out split; the last line of stdout is one JSON object.

python -m training.evaluate generation --data-dir DATA
python -m training.evaluate translation --checkpoint checkpoints/translation --limit 100
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from training.common import TASKS, resolve_data_dir


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data-dir", help="folder with the packed datasets (default: $PLAYGROUND_DATA)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: checkpoints/<task>)")
    p.add_argument("--limit", type=int, help="score only the first N examples")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    args = p.parse_args(argv)
    task = importlib.import_module(f"training.{args.task}")
    checkpoint = Path(args.checkpoint or Path("checkpoints") / args.task)
    metrics = task.evaluate(checkpoint, resolve_data_dir(args.data_dir), args.limit, args.device)
    print(json.dumps(metrics))
    return metrics


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
