"""The page and the API's answers, gzip'd for browsers that accept it.

Gradio compresses what it serves by file extension (.js, .css, .json, ...: its BrotliMiddleware).
Paths without one, the page itself above all (~0.8 MB: its config holds the tabs' worked
examples), went out uncompressed. `CompressPages` gzips exactly those; result streams
(text/event-stream) and anything already encoded pass as they are (Starlette's GZipMiddleware).
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware

# ~6x smaller for the page at ~10 ms of CPU per page view on this app's cores (level 9: ~2x the
# CPU for 1% fewer bytes)
LEVEL = 5


class CompressPages:
    """ASGI middleware: gzip for HTTP paths whose last part has no file extension."""

    def __init__(self, app, level: int = LEVEL) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024, compresslevel=level)

    async def __call__(self, scope, receive, send):
        name = scope.get("path", "").rsplit("/", 1)[-1]
        handler = self.gzip if scope["type"] == "http" and "." not in name else self.app
        await handler(scope, receive, send)
