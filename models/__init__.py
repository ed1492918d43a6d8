"""Pure PyTorch transformers: no Lightning, no Gradio. See README's concept map."""
