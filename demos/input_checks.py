"""Every value an event receives, checked against its component before Gradio or a tab touches it.

Text is a string of at most MAX_TEXT_CHARS characters with no lone surrogates, numbers are finite
numbers, switches are booleans or "true"/"false", files are uploads. `uploaded_path` opens only
files Gradio received as uploads; any other path is refused with one message, whether it exists
or not. `install_input_checks` puts the checks in front of every event of a built app.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MAX_TEXT_CHARS = 2000  # longer than any model here reads (the translator takes ~128 tokens)
MAX_MAGNITUDE = 1e15  # a number beyond this is nobody's setting (and 10**400 overflows a float)

NOT_UPLOADED = "That file was not uploaded to this app. Upload it first (gradio_client: handle_file(path))."


class InputRefused(ValueError):
    """A value the app will not take; the message is meant for the person who sent it."""


def short_label(component) -> str:
    """'Temperature (0 = always the most likely)' -> 'Temperature'."""
    label = str(getattr(component, "label", None) or type(component).__name__)
    return label.split(" (")[0].strip() or type(component).__name__


def check_text(value, name: str):
    """None or a string of at most MAX_TEXT_CHARS characters that is valid Unicode."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputRefused(f"{name} must be text, not {type(value).__name__}.")
    if len(value) > MAX_TEXT_CHARS:
        raise InputRefused(f"{name} is {len(value):,} characters long; this app takes at most {MAX_TEXT_CHARS:,}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputRefused(f"{name} contains a character that is not valid text (a lone surrogate).") from None
    return value


def check_number(value, name: str):
    """None or a finite int/float no larger than MAX_MAGNITUDE (no strings, no booleans)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputRefused(f"{name} must be a number, not {type(value).__name__} {str(value)[:40]!r}.")
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:  # checked before float() can overflow
        raise InputRefused(f"{name} is far too large (more than {MAX_MAGNITUDE:g}).")
    if not math.isfinite(value):
        raise InputRefused(f"{name} must be a finite number, not {value}.")
    if abs(value) > MAX_MAGNITUDE:
        raise InputRefused(f"{name} is far too large (more than {MAX_MAGNITUDE:g}).")
    return value


def check_bool(value, name: str) -> bool:
    """True/False, or the strings "true"/"false" in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputRefused(f"{name} must be true or false, not {str(value)[:40]!r}.")


def check_choice(value, name: str, multiselect: bool = False):
    """A dropdown/radio value: a string or number (Gradio checks it is one of the choices)."""
    if multiselect and isinstance(value, list):
        return [check_choice(v, name) for v in value]
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_number(value, name)
    return check_text(value, name)


def uploaded_path(payload) -> str:
    """The path of a file Gradio received as an upload (a FileData dict or a path string).

    Anything else (a path on the server, a URL, a path that escapes the upload folder through
    '..' or a link) gets the same InputRefused, whether or not such a file exists, so the
    answer says nothing about the server's files."""
    from gradio.utils import get_upload_folder

    path = payload.get("path") if isinstance(payload, dict) else payload
    if not isinstance(path, (str, Path)) or not str(path):
        raise InputRefused(NOT_UPLOADED)
    folder = os.path.realpath(get_upload_folder())
    real = os.path.realpath(str(path))
    if os.path.commonpath([folder, real]) != folder or real == folder:
        raise InputRefused(NOT_UPLOADED)
    return real


def check_file(value, name: str):
    """A file component's raw value: None, an upload, or (images) an inline data: URL."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputRefused(f"{name} must be an uploaded file, not {type(value).__name__}.")
    if value.get("path") is None and str(value.get("url") or "").startswith("data:"):
        return value  # an inline picture (webcam, clipboard); its size is bounded by the request-body limit
    uploaded_path(value)
    return value


def input_checks(fn) -> list:
    """One check per input of an event (a gradio BlockFunction), from its components, or for a
    `gr.api` function (whose inputs are bare `Api` components) from its type hints."""
    import typing

    import gradio as gr

    hints, names = {}, []
    if any(type(c).__name__ == "Api" for c in fn.inputs):
        try:
            hints = typing.get_type_hints(inspect_target(fn.fn))
        except Exception:  # noqa: BLE001 - no usable hints: the function checks its own values
            hints = {}
        names = [n for n in inspect_parameters(fn.fn) if n != "return"]
    checks = []
    for i, component in enumerate(fn.inputs):
        name = short_label(component)
        if isinstance(component, gr.Checkbox):
            checks.append((check_bool, name))
        elif isinstance(component, (gr.Number, gr.Slider)):
            checks.append((check_number, name))
        elif isinstance(component, (gr.Dropdown, gr.Radio)):
            multi = bool(getattr(component, "multiselect", False))
            checks.append((lambda v, n, multi=multi: check_choice(v, n, multi), name))
        elif isinstance(component, gr.Textbox):
            checks.append((check_text, name))
        elif isinstance(component, (gr.Image, gr.Audio, gr.File, gr.Video)):
            checks.append((check_file, name))
        elif type(component).__name__ == "Api" and i < len(names):
            hint = hints.get(names[i])
            kind = getattr(hint, "__name__", str(hint))
            check = {"str": check_text, "int": check_number, "float": check_number, "bool": check_bool}.get(kind)
            checks.append((check_file if kind == "FileData" else check, names[i]))
        else:
            checks.append((None, name))  # gr.State and the like: nothing the client sends
    return checks


def inspect_target(fn):
    """The function behind decorators that used functools.wraps."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def inspect_parameters(fn) -> list[str]:
    import inspect

    return list(inspect.signature(inspect_target(fn)).parameters)


def check_inputs(checks: list, inputs: list) -> list:
    """Raw event inputs (as the client sent them) -> the same list with switches as booleans.
    Raises InputRefused naming the first value that is refused."""
    checked = list(inputs)
    for i, ((check, name), value) in enumerate(zip(checks, inputs, strict=False)):
        if check is not None:
            checked[i] = check(value, name)
    return checked


def install_input_checks(demo) -> None:
    """Check every event's raw inputs before Gradio preprocesses them; a refused value becomes a
    gr.Error with the refusal's sentence.

    Relies on a Gradio internal: `Blocks.process_api(block_fn, inputs, ...)` is the one method every
    event (queued or not) passes through with the inputs as the client sent them, `block_fn` being a
    BlockFunction or its index in `demo.fns`. It is replaced on this instance by a wrapper."""
    process_api = demo.process_api
    checks: dict = {}  # BlockFunction -> its input checks

    async def checked_process_api(block_fn, inputs, *args, **kwargs):
        import gradio as gr

        fn = demo.fns[block_fn] if isinstance(block_fn, int) else block_fn
        if fn not in checks:
            checks[fn] = input_checks(fn)
        try:
            inputs = check_inputs(checks[fn], inputs)
        except InputRefused as err:
            raise gr.Error(str(err)) from None
        return await process_api(block_fn, inputs, *args, **kwargs)

    demo.process_api = checked_process_api
