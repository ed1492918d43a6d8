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


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(tmp_path):
    text = "".join(f"LINE {i}:\nwhere the bee sucks, there suck I.\n" for i in range(60))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "tinyshakespeare_input.txt.gz").write_bytes(gzip.compress(text.encode()))
    cmd = [sys.executable, "-m", "training.train", "generation"]
    cmd += ["--config", "training/configs/generation-cpu-tiny.yaml", "--accelerator", "cpu", "--devices", "2"]
    cmd += ["--strategy", "ddp", "--set", "max_steps=2", "val_every=2", "--no-export"]
    cmd += ["--data-dir", str(data_dir), "--log-dir", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout  # really two ranks (gloo)
    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 prints
    summary = json.loads(summaries[0])
    assert summary["steps"] == 2
    assert summary["last_validation"]["step"] == 2
