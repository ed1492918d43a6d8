"""`python app.py` in a subprocess, started as a person would start it, on a free port.

The tests' shared app (`app_server` in tests/conftest.py), the tests that start an app of their own
(missing or damaged checkpoints, trusted proxies) and bench/load.py, bench/startup.py use it: each
starts the app, waits until its page answers, talks to it over HTTP and stops it at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 2.0) -> bool:
    """True once GET `url` returns HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class AppServer:
    """`python app.py` with GRADIO_SERVER_PORT set; use as a context manager or start()/stop().

    `env` adds to (or, with None values, removes from) this process's environment. The server's
    output goes to `log_path` (a temporary file by default), shown when it fails to start."""

    def __init__(self, env: dict[str, str | None] | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = dict(os.environ, GRADIO_SERVER_PORT=str(self.port), GRADIO_ANALYTICS_ENABLED="False")
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="playground-app-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.startup_s = float("nan")

    def start(self, timeout: float = 120.0) -> AppServer:
        """Start the app and return once its page answers (raises RuntimeError with its log if not)."""
        start = time.perf_counter()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "app.py"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        while not answers(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.perf_counter() - start > timeout:
                self.stop()
                raise RuntimeError(f"app.py did not answer within {timeout:.0f} s:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - start
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
