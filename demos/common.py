"""What every tab shares: where checkpoints live, loading them once, one kind of user error with
one decorator that shows it, one layer/head selector format, and one helper that wires an event
into the app's shared queue."""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from demos import registry
from demos.checkpoint_checks import checkpoint_problem
from models.checkpoint import keep_linears_in_float16, load_model, read_config
from models.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent

# Every event names this concurrency group, so all of them share one queue and the app's limit of
# requests at once (app.py's share_cores says why). PLAYGROUND_CONCURRENCY_GROUP=per_event gives
# each event its own group, Gradio's default, to compare the two with bench/load.py.
CORES = None if os.environ.get("PLAYGROUND_CONCURRENCY_GROUP", "shared") == "per_event" else "cores"


@dataclass
class AttentionView:
    """What a model tab's `attention_of(...)` gives the Attention Maps tab (demos/registry.py):
    the model's attention of every kind (models.attention_data.Attention, keyed by kind), what
    to draw it over, and notes for the person."""

    maps: dict  # kind -> models.attention_data.Attention
    notes: list[str] = field(default_factory=list)
    image: np.ndarray | None = None  # (H, W, 3) uint8: the picture the patches cover (vision)
    spectrogram: np.ndarray | None = None  # (n_mels, frames) dB, shown under the map (audio)
    spectrogram_times: np.ndarray | None = None  # seconds of each spectrogram frame


def checkpoint_dir(task: str) -> Path:
    """checkpoints/<task>, or $PLAYGROUND_CHECKPOINTS/<task> (tests point it elsewhere)."""
    base = Path(os.environ.get("PLAYGROUND_CHECKPOINTS", ROOT / "checkpoints"))
    return base / task


def checkpoint_present(task: str) -> bool:
    return (checkpoint_dir(task) / "config.json").exists() and (checkpoint_dir(task) / "model.safetensors").exists()


def has_checkpoint(task: str) -> bool:
    """Present and not damaged (demos.checkpoint_checks.checkpoint_problem: checked without loading it)."""
    return checkpoint_present(task) and checkpoint_problem(checkpoint_dir(task)) is None


def checkpoint_config(task: str) -> dict:
    """A task's model config (config.json's "config" fields), read without building the model: a
    tab can lay itself out before its model, and the libraries behind it, are loaded."""
    return read_config(checkpoint_dir(task))["config"]


class UserError(ValueError):
    """Something the person (or API caller) can fix: the message is one sentence that says how.
    Each tab's own error classes derive from it; `shows_errors` turns it into a gr.Error."""


class MissingCheckpoint(UserError):
    """The tab's model is not there; the message says how to get it."""


def missing_message(task: str) -> str:
    if checkpoint_present(task) and (problem := checkpoint_problem(checkpoint_dir(task))):
        return (
            f"The {task} model is switched off: its checkpoint in `{checkpoint_dir(task)}` is damaged ({problem}). "
            f"Train it again with `python -m training.train {task} --config training/configs/{task}-cpu-tiny.yaml`."
        )
    return (
        f"The {task} model is not available: `{checkpoint_dir(task)}` has no checkpoint. "
        f"Train one with `python -m training.train {task} --config training/configs/{task}-cpu-tiny.yaml`."
    )


_lock = threading.Lock()
_loaded: dict[str, tuple] = {}  # checkpoint folder -> (model, tokenizer)


@torch.inference_mode(False)
def _load(folder: str, float16_matrices: bool):
    """Loaded in normal mode whatever the first caller's: every later caller shares the model, and
    tensors made under inference_mode could not take part in autograd."""
    model = load_model(folder)
    if float16_matrices:
        keep_linears_in_float16(model)
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
                try:
                    _loaded[folder] = _load(folder, registry.model(task).float16_matrices)
                except Exception as err:  # noqa: BLE001 - damage the quick check missed: the tab says so
                    raise MissingCheckpoint(
                        f"The {task} model is switched off: its checkpoint in `{folder}` could not be loaded "
                        f"({type(err).__name__}). Train it again with `python -m training.train {task}`."
                    ) from None
    return _loaded[folder]


def worked_example(fn: Callable, *args, fallback=None):
    """`fn(*args)` computed once while the app is built, so that a tab opens with its example
    already worked out (no request, nothing per visitor); `fallback` (the tab's empty outputs)
    when the model cannot give it: a checkpoint damaged in a way the quick check missed, or one
    trained on other data that cannot read the example (the tab says why when someone asks)."""
    try:
        return fn(*args)
    except UserError:  # MissingCheckpoint included
        return fallback


def load_in_background(tasks: list[str]) -> threading.Thread:
    """Load the models of `tasks` (those with a checkpoint) on a daemon thread: the app answers
    before they are ready (timm alone takes ~2 s to import), and a request that comes first
    simply waits for its model under the loader's lock."""

    def load() -> None:
        for task in tasks:
            if has_checkpoint(task):
                try:
                    get_model(task)
                except MissingCheckpoint:  # damaged: its tab says so when asked; load the others
                    continue

    thread = threading.Thread(target=load, name="load-models", daemon=True)
    thread.start()
    return thread


def configure_threads() -> None:
    """Threads per request: $PLAYGROUND_TORCH_THREADS, by default 1. Our models are small: on 2
    cores one thread was as fast as two even for a lone request, and with two requests running
    at once (app.py) each gets a core of its own instead of four threads fighting over two."""
    torch.set_num_threads(int(os.environ.get("PLAYGROUND_TORCH_THREADS", "1")))


# ----------------------------------------------------------------------------------------------
# Errors and notes shown to the person, one way in every tab
# ----------------------------------------------------------------------------------------------


def warn(notes: Iterable[str]) -> None:
    """Show each note as a yellow gr.Warning (what was done to the input, what to trust less)."""
    import gradio as gr

    for note in notes:
        gr.Warning(str(note))


def doubt_label(title: str, doubt: str | None = None) -> dict:
    """An update for a gr.Label of a classifier's top scores: when the model has reason to doubt
    its answer (`doubt`: a title saying so), the large headline naming the top class is hidden
    and the title says why, so a tone is not announced as "two" in large letters; the scores stay.
    It runs after the classifying event, in the page only, so API callers keep a plain label."""
    import gradio as gr

    return gr.update(label=doubt or title, show_heading=doubt is None)


def shows_errors(fn: Callable) -> Callable:
    """Decorate an event handler: a UserError it raises becomes a gr.Error with the same sentence
    (no traceback reaches the page or the API caller). Works for streaming handlers too."""
    import gradio as gr

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as error:
                raise gr.Error(str(error)) from None

        return stream

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as error:
            raise gr.Error(str(error)) from None

    return handler


# ----------------------------------------------------------------------------------------------
# One layer/head selector format: "average", then "1", "2", ... (1-based, as shown)
# ----------------------------------------------------------------------------------------------

AVERAGE = "average"


def selector_choices(count: int, first: str = AVERAGE) -> list[str]:
    """A layer or head dropdown's choices: `first` ("average", or e.g. "rollout"), "1" .. str(count)."""
    return [first] + [str(i + 1) for i in range(count)]


def parse_selector(value, count: int, what: str, special: tuple[str, ...] = (AVERAGE,)) -> int | None:
    """A selector's value -> 0-based index, or None for "average" (or another name in `special`).

    Takes 3, "3", 3.0 and the older "layer 3" / "head 3" forms (API callers may still send them);
    anything else is a UserError that says what is allowed."""
    if value is None or value == "" or str(value) in special:
        return None
    words = str(value).split()
    try:
        number = float(words[-1]) if words and not isinstance(value, bool) else float("nan")
    except ValueError:
        number = float("nan")
    allowed = " or ".join(repr(s) for s in special) + " or a number" if special else "a whole number"
    if not number.is_integer():
        if special:
            raise UserError(
                f"The {what} must be {allowed} from 1 to {count}: layer and head are numbers from 1 or "
                f"{special[0]!r}, not {value!r}."
            )
        raise UserError(f"The {what} must be a whole number from 1 to {count}, not {value!r}.")
    if not 1 <= number <= count:
        raise UserError(
            f"{what.capitalize()} {int(number)} does not exist: the {what} must be {allowed} from 1 to {count}."
        )
    return int(number) - 1


# ----------------------------------------------------------------------------------------------
# The shared queue
# ----------------------------------------------------------------------------------------------


def listen(
    trigger: Callable | list[Callable],
    fn: Callable,
    inputs=None,
    outputs=None,
    *,
    api_name: str | None = None,
    **kwargs,
):
    """Wire `fn` to an event (`button.click`, `dropdown.input`, `event.then`, ...), or to a list of
    them (one `gr.on`), in the app's one queue (`concurrency_id=CORES`). Without an `api_name` the
    event stays out of the API; with one it is callable (gradio_client) but undocumented, so the
    API page and the MCP tool list show only demos/tools.py's tools: a tab's endpoint returns plots
    and browser state that mean nothing to a tool user."""
    import gradio as gr

    if api_name is None:
        kwargs.setdefault("api_visibility", "private")
    else:
        kwargs["api_name"] = api_name
        kwargs.setdefault("api_visibility", "undocumented")
    if isinstance(trigger, list):
        return gr.on(trigger, fn, inputs, outputs, concurrency_id=CORES, **kwargs)
    return trigger(fn, inputs, outputs, concurrency_id=CORES, **kwargs)
