"""Shared fixtures: where the real datasets are (tests that need them skip when absent), one
`python app.py` for the tests that talk to the app as it ships, and the `gpu` marker's skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PLAYGROUND_DATA", ROOT / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """$PLAYGROUND_DATA (default: data/ in the repository); skips the test where it is absent (CI has it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the packed datasets at {SHARED_DATA} ($PLAYGROUND_DATA), which this machine lacks")
    return SHARED_DATA


@pytest.fixture(scope="session")
def app_server():
    """The app as it ships, started once for the session (a start costs 10-18 s of CI) and shared by
    the tests that only send it requests (the Train tab's one training slot is freed when a stream
    ends). Tests that change its environment (missing or damaged checkpoints, trusted proxies) start
    their own."""
    from tests.app_server import AppServer

    with AppServer() as server:
        yield server


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
