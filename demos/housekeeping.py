"""What a long-running public server must give back: old files, old sessions, freed memory.

- Uploads and outputs older than 15 minutes are deleted every 5 minutes (CACHE_CLEANUP).
- At most SESSIONS_KEPT sessions keep per-session state, and a kept result (gr.State) expires
  STATE_TTL_S after it was stored.
- Freed heap pages go back to the system (`release_memory`), and glibc keeps few heaps
  (`limit_malloc_arenas`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os

SESSIONS_KEPT = 256  # per-session state (gr.State) of at most this many sessions; the oldest go first
STATE_TTL_S = 900  # and a kept result (gr.State) is dropped 15 minutes after it was stored
# every 5 minutes, delete uploads and outputs older than 15 minutes ($PLAYGROUND_CACHE_CLEANUP="300,900")
CACHE_CLEANUP = tuple(int(v) for v in os.environ.get("PLAYGROUND_CACHE_CLEANUP", "300,900").split(","))


def expire_kept_files_and_state(demo) -> None:
    """Set a built app's cache cleanup (Blocks.delete_cache, read when the app launches) and give
    every gr.State without a time to live STATE_TTL_S."""
    import gradio as gr

    demo.delete_cache = CACHE_CLEANUP
    for block in demo.blocks.values():
        if isinstance(block, gr.State) and block.time_to_live is None:
            block.time_to_live = STATE_TTL_S


def release_memory() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise, so the resident
    memory of a long-running server only grows)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own heap (arena); with Gradio's many worker
    threads they fragment and hold memory. Two are plenty for two cores."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
