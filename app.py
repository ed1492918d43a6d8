"""Transformer Playground: `python app.py` opens it on http://127.0.0.1:7860.

Builds one gr.Blocks app from the tab modules in demos/. A tab whose checkpoint is missing shows
a message instead of its controls; the other tabs work. GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
choose host and port (a Hugging Face Space sets them); PLAYGROUND_CONCURRENCY (requests run at
once) and PLAYGROUND_TORCH_THREADS (threads per request) tune it to the machine (bench/load.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# OpenMP threads that spin while waiting for work steal the cores other requests need: read
# when torch loads, so it is set before any import does that
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr  # noqa: E402

from demos import common, limits, registry, tools  # noqa: E402

# the tab bar: every model's tab, then the tabs that look inside them (demos/registry.py)
TABS = tuple(registry.tab_modules())

INTRO = """# Transformer Playground
Small transformers trained from scratch, and everything they attend to. Each tab runs one of our
own models on this machine's CPU; the **Attention Maps** and **Attention Lab** tabs open them up."""


def build_app() -> gr.Blocks:
    common.configure_threads()
    with gr.Blocks(title="Transformer Playground") as demo:
        gr.Markdown(INTRO)
        for tab in TABS:
            with gr.Tab(tab.TITLE, id=tab.__name__.rsplit(".", 1)[-1]):
                tab.build()
        tools.register()  # API endpoints that are also MCP tools (demos/tools.py)
    share_cores(demo, int(os.environ.get("PLAYGROUND_CONCURRENCY", "2")))
    return demo


def share_cores(demo: gr.Blocks, limit: int) -> None:
    """At most `limit` requests of any kind run at once; the others wait in one first-come queue.

    Gradio limits each event on its own (PLAYGROUND_CONCURRENCY_GROUP=per_event): seven endpoints
    then run up to 14 requests on 2 cores. bench/load.py (20 clients) measured that short requests
    stay quick that way but a generation, which needs the CPU for every character, waited ~15 s
    for its first one (p95 29 s); one queue kept every endpoint's p95 under 7 s, at the same
    throughput and memory. Streamed generation in a queue of its own did not help.
    Each tab's listeners join the group with `concurrency_id=demos.common.CORES`.

    demos/limits.py bounds what one visitor may cost: at most 4 requests each waiting or running,
    queued requests nobody listens for dropped, every input checked before any work, uploads and
    outputs deleted after 15 minutes."""
    demo.queue(default_concurrency_limit=limit, max_size=64)
    limits.protect(demo)


def main() -> None:
    demo = build_app()
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=gr.themes.Soft(),
        **limits.launch_options(),  # upload and request-body limits, sessions kept
        mcp_server=True,  # demos/tools.py's tools at /gradio_api/mcp/
        prevent_thread_lock=True,
    )
    # the page is up; now the models the layout did not need (the ViT pulls in timm, ~2 s)
    common.load_in_background(registry.tasks())
    demo.block_thread()


if __name__ == "__main__":
    main()
