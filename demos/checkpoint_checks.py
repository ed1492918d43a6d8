"""A checkpoint that is present but damaged, found without loading it (`checkpoint_problem`)."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

_checked: dict[tuple, str | None] = {}
_checked_lock = threading.Lock()
TOKENIZED = ("gpt", "encoder_decoder", "bert")  # architectures that need a tokenizer file


def _fingerprint(folder: Path) -> tuple:
    files = []
    for name in ("config.json", "model.safetensors", "vocab.json", "tokenizer.json"):
        try:
            stat = (folder / name).stat()
            files.append((name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            files.append((name, None, None))
    return (str(folder), *files)


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read (its header, or its size against the header), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        if len(start) < 8:
            return "the weights file is empty or cut short"
        (header_len,) = struct.unpack("<Q", start)
        if header_len > min(size - 8, 100 * 1024 * 1024):
            return "the weights file is cut short or is not a safetensors file"
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "the weights file's header is damaged"
    if not isinstance(header, dict):
        return "the weights file's header is damaged"
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t
    ]
    if 8 + header_len + max(ends, default=0) > size:
        return "the weights file is cut short (truncated)"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """What is wrong with a checkpoint folder that is present (config.json and model.safetensors
    exist), found without loading it: unreadable config, truncated weights, a missing or unreadable
    tokenizer, a config that does not build. None when it looks usable. Cached per file state."""
    folder = Path(folder)
    key = _fingerprint(folder)
    if key in _checked:
        return _checked[key]
    with _checked_lock:
        problem = _checkpoint_problem(folder)
        _checked[key] = problem
    return problem


def _checkpoint_problem(folder: Path) -> str | None:
    from models.checkpoint import ARCHITECTURES

    try:
        info = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its config.json is not valid JSON"
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        return "its config.json has no model config"
    architecture = info.get("architecture")
    if architecture not in ARCHITECTURES:
        return f"its config.json names an unknown architecture ({str(architecture)[:40]!r})"
    problem = safetensors_problem(folder / "model.safetensors")
    if problem:
        return problem
    if architecture in TOKENIZED:
        names = [n for n in ("vocab.json", "tokenizer.json") if (folder / n).exists()]
        if not names:
            return "its tokenizer file (vocab.json or tokenizer.json) is missing"
        try:
            json.loads((folder / names[0]).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return f"its {names[0]} is damaged"
    if architecture != "vit":  # building timm's ViT would import timm (~2 s); its load reports instead
        from models.checkpoint import build_model

        try:  # these models are small (< 2M parameters): building one takes milliseconds
            build_model(architecture, info["config"])
        except Exception as err:  # noqa: BLE001 - any failure means the config does not describe a model
            return f"its config.json does not describe a model that can be built ({type(err).__name__})"
    return None
