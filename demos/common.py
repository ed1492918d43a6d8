"""What every tab shares: where checkpoints live, loading them once, and friendly errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from models.checkpoint import load_model, read_config
from models.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent

# Every event names this concurrency group, so all of them share one queue and the app's limit of
# requests at once (app.py's share_cores says why). PLAYGROUND_CONCURRENCY_GROUP=per_event gives
# each event its own group, Gradio's default, to compare the two with bench/load.py.
CORES = None if os.environ.get("PLAYGROUND_CONCURRENCY_GROUP", "shared") == "per_event" else "cores"


def checkpoint_dir(task: str) -> Path:
    """checkpoints/<task>, or $PLAYGROUND_CHECKPOINTS/<task> (tests point it elsewhere)."""
    base = Path(os.environ.get("PLAYGROUND_CHECKPOINTS", ROOT / "checkpoints"))
    return base / task


def has_checkpoint(task: str) -> bool:
    return (checkpoint_dir(task) / "config.json").exists() and (checkpoint_dir(task) / "model.safetensors").exists()


def checkpoint_config(task: str) -> dict:
    """A task's model config (config.json's "config" fields), read without building the model: a
    tab can lay itself out before its model, and the libraries behind it, are loaded."""
    return read_config(checkpoint_dir(task))["config"]


class MissingCheckpoint(RuntimeError):
    """The tab's model is not there; the message says how to get it."""


def missing_message(task: str) -> str:
    return (
        f"The {task} model is not available: `{checkpoint_dir(task)}` has no checkpoint. "
        f"Train one with `python -m training.train {task} --config training/configs/{task}-cpu-tiny.yaml`."
    )


_lock = threading.Lock()
_loaded: dict[str, tuple] = {}  # checkpoint folder -> (model, tokenizer)


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
    folder = str(checkpoint_dir(task))
    if folder not in _loaded:  # a loaded model is read without the lock, so no request waits on a load
        with _lock:  # two first requests at once must not both load
            if folder not in _loaded:
                _loaded[folder] = _load(folder)
    return _loaded[folder]


def load_in_background(tasks: list[str]) -> threading.Thread:
    """Load the models of `tasks` (those with a checkpoint) on a daemon thread: the app answers
    before they are ready (timm alone takes ~2 s to import), and a request that comes first
    simply waits for its model under the loader's lock."""

    def load() -> None:
        for task in tasks:
            if has_checkpoint(task):
                get_model(task)

    thread = threading.Thread(target=load, name="load-models", daemon=True)
    thread.start()
    return thread


def configure_threads() -> None:
    """Threads per request: $PLAYGROUND_TORCH_THREADS, by default 1. Our models are small: on 2
    cores one thread was as fast as two even for a lone request, and with two requests running
    at once (app.py) each gets a core of its own instead of four threads fighting over two."""
    torch.set_num_threads(int(os.environ.get("PLAYGROUND_TORCH_THREADS", "1")))


def zerogpu(fn, duration: int = 20):
    """On a ZeroGPU Space (the `spaces` package is installed) run `fn` on a GPU worker for at most
    `duration` seconds; elsewhere (here, a CPU Space) a no-op.

    Our models are small and run on the CPU faster than a round trip to a GPU worker, so only the
    Attention Lab's handler carries it: ZeroGPU refuses to start a Gradio app whose event
    handlers include no @spaces.GPU function, and that handler is self-contained (no gr.State, no
    warnings, no streaming)."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)
