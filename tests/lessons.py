"""Train one Train-tab lesson in a worker process, on one thread, and send back what its test checks.

The lessons' tests train nine small runs of 10-60 s each on one thread; `tests/test_train_live.py`
hands them to two such workers so that both cores train at once. This module imports no Gradio, so a
worker starts in a few seconds.
"""

from __future__ import annotations

import torch

from models.live_training import LiveRun, Point, Settings


def train(settings: Settings, steps: int) -> dict:
    """The transformer's last validation point, its calibration and its attention maps after `steps`."""
    torch.set_num_threads(1)  # as in the test module: the same arithmetic, the same figures
    run = LiveRun(settings)
    run.train_for(1e9, max_steps=steps)
    run.snapshot()
    learner = run.learners[0]
    last: Point = learner.history[-1]
    return {"last": last, "calibration": run.calibration(learner), "attention": run.attention_maps()}
