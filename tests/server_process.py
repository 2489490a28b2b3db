"""The control plane as a real child process (``python -m sparsetrain.service serve``) on a
free port, joined to the test session's local Ray cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import ray

DEADLINE_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m sparsetrain.service serve`` as a child process."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SPARSETRAIN_DATA_DIR": str(data_dir),
            "SPARSETRAIN_MONITOR_INTERVAL_S": "0.2",
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sparsetrain.service", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not become ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for_job(
    url: str, job_id: str, until: Any, deadline_s: float = DEADLINE_S
) -> dict[str, Any]:
    """Poll the job until ``until(job)`` holds (bounded); fails early on FAILED/CANCELLED."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if until(job):
            return job
        assert job["status"] not in ("FAILED", "CANCELLED"), job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the condition")
