"""Benchmarks whose printed tables are the README's results (run them as `python -m bench.<name>`)."""
