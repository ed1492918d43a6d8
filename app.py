"""Transformer Playground: `python app.py` opens it on http://127.0.0.1:7860.

Builds one gr.Blocks app from the tab modules in demos/. A tab whose checkpoint is missing shows
a message instead of its controls; the other tabs work. GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
choose host and port (a Hugging Face Space sets them).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from demos import attention_lab, attention_maps, audio, common, generation, translation, vision  # noqa: E402

TABS = (generation, translation, vision, audio, attention_maps, attention_lab)

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
    # requests share 2 cores: a few at a time keeps latency flat (bench/load.py measured it)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def main() -> None:
    demo = build_app()
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="20mb",
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
