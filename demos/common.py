"""What every tab shares: where checkpoints live, loading them once, and friendly errors."""

from __future__ import annotations

import os
import threading
from functools import cache
from pathlib import Path

import torch

from models.checkpoint import load_model
from models.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def checkpoint_dir(task: str) -> Path:
    """checkpoints/<task>, or $PLAYGROUND_CHECKPOINTS/<task> (tests point it elsewhere)."""
    base = Path(os.environ.get("PLAYGROUND_CHECKPOINTS", ROOT / "checkpoints"))
    return base / task


def has_checkpoint(task: str) -> bool:
    return (checkpoint_dir(task) / "config.json").exists() and (checkpoint_dir(task) / "model.safetensors").exists()


class MissingCheckpoint(RuntimeError):
    """The tab's model is not there; the message says how to get it."""


def missing_message(task: str) -> str:
    return (
        f"The {task} model is not available: `{checkpoint_dir(task)}` has no checkpoint. "
        f"Train one with `python -m training.train {task} --config training/configs/{task}-cpu-tiny.yaml`."
    )


_lock = threading.Lock()


@cache
def _load(folder: str):
    model = load_model(folder)
    try:
        tokenizer = load_tokenizer(folder)
    except FileNotFoundError:
        tokenizer = None
    return model, tokenizer


def get_model(task: str):
    """(model, tokenizer or None) for a task, loaded once per process; MissingCheckpoint if absent."""
    if not has_checkpoint(task):
        raise MissingCheckpoint(missing_message(task))
    with _lock:  # two first requests at once must not both load
        return _load(str(checkpoint_dir(task)))


def configure_threads() -> None:
    """A Space has 2 cores: one intra-op pool of that size, shared by all requests."""
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
