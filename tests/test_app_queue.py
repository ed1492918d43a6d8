"""The app's one queue for the machine's cores (app.share_cores): every event that runs our code
joins the same concurrency group, so at most PLAYGROUND_CONCURRENCY requests run at once in all."""

from __future__ import annotations

import pytest

import app
from demos.common import CORES


@pytest.fixture(scope="module")
def demo():
    return app.build_app()


def test_every_queued_event_shares_one_concurrency_group(demo):
    assert CORES == "cores"
    queued = [fn for fn in demo.fns.values() if fn.fn is not None and fn.queue]
    assert len(queued) >= 20  # the tabs' buttons, selectors and sliders
    strays = sorted(fn.name for fn in queued if fn.concurrency_id != CORES)
    assert not strays, f"events outside the shared queue (add concurrency_id=CORES): {strays}"


def test_the_shared_queue_runs_two_requests_at_once(demo):
    assert demo._queue.default_concurrency_limit == 2  # the Space's 2 cores
