"""Scaling out the Lightning way: the train CLI runs data-parallel (DDP, gloo on the CPU) across
two processes, and rank 0 reports the steps every rank took together."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def train_with_ddp(tmp_path: Path, settings: list[str]) -> dict:
    """The generation CLI on two CPU processes (gloo) over a tiny text; rank 0's JSON summary."""
    text = "".join(f"LINE {i}:\nwhere the bee sucks, there suck I.\n" for i in range(60))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "tinyshakespeare_input.txt.gz").write_bytes(gzip.compress(text.encode()))
    cmd = [sys.executable, "-m", "training.train", "generation"]
    cmd += ["--config", "training/configs/generation-cpu-tiny.yaml", "--accelerator", "cpu", "--devices", "2"]
    cmd += ["--strategy", "ddp", "--set", *settings, "--no-export"]
    cmd += ["--data-dir", str(data_dir), "--log-dir", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout  # really two ranks (gloo)
    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 prints
    return json.loads(summaries[0])


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(tmp_path):
    summary = train_with_ddp(tmp_path, ["max_steps=2", "val_every=2"])
    assert summary["steps"] == 2
    assert summary["last_validation"]["step"] == 2


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_the_time_budget_is_spent(tmp_path):
    """A timed run (max_time_s) under DDP: the ranks take rank 0's clock, so they stop at the same
    step; were one rank to stop alone, the other would wait in its gradient all-reduce forever and
    the run would time out."""
    summary = train_with_ddp(tmp_path, ["max_steps=1000000", "max_time_s=3", "val_every=1000000"])
    assert 10 <= summary["steps"] < 1_000_000  # stopped by the clock (read every 10 steps), not by steps
    assert summary["steps"] % 10 == 0
