"""What one visitor may cost the public app, decided before any expensive work starts.

app.py calls `protect(demo)` on the built, queued app and launches it with `launch_options()`;
this module only puts together the pieces, each in its own module:

- demos/input_checks.py: every value an event receives is checked against its component, and
  only uploaded files are opened (`uploaded_path`, which a tab reading raw uploads calls).
- demos/fair_queue.py: request bodies over the limit are refused before they are read; each
  visitor has a bounded, fair share of the queue; requests nobody listens for are dropped.
- demos/housekeeping.py: old uploads, outputs and kept results expire; freed memory goes back.
- demos/compression.py: the page and API answers go gzip'd (Gradio compresses only files).
- demos/checkpoint_checks.py and demos/audio_files.py: damaged checkpoints and hostile audio
  files are found from their headers, without loading or decoding them.
"""

from __future__ import annotations

from demos.compression import CompressPages
from demos.fair_queue import MAX_UPLOAD_BYTES, FairQueue, Gatekeeper
from demos.housekeeping import SESSIONS_KEPT, expire_kept_files_and_state, limit_malloc_arenas
from demos.input_checks import install_input_checks


def protect(demo) -> None:
    """Install the input checks, the fair queue and the cache cleanup on a built, queued app."""
    limit_malloc_arenas()
    expire_kept_files_and_state(demo)
    FairQueue(demo._queue)  # Blocks._queue: the app's gradio.queueing.Queue, set by demo.queue()
    install_input_checks(demo)


def launch_options() -> dict:
    """demo.launch() arguments that bound uploads, request bodies and kept sessions, and compress
    the page (demos/compression.py)."""
    from starlette.middleware import Middleware

    return {
        "max_file_size": MAX_UPLOAD_BYTES,
        "state_session_capacity": SESSIONS_KEPT,
        # the first is the outermost: a body over the limit is refused before anything else runs
        "app_kwargs": {"middleware": [Middleware(Gatekeeper), Middleware(CompressPages)]},
    }
