"""The control plane as a child process (``python -m sparsetrain.service serve``) on a free
loopback port, for benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m sparsetrain.service serve`` as a child process on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path,
        ray_address: str,
        monitor_interval_s: float = 0.5,
        env: dict[str, str] | None = None,
    ) -> None:
        """Serve ``data_dir`` on a free port, on the Ray cluster at ``ray_address``; ``env``
        adds or overrides environment variables (API tokens are dropped unless given)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("SPARSETRAIN_API_TOKENS", "SPARSETRAIN_API_TOKENS_FILE")
        }
        self.env.update(
            SPARSETRAIN_DATA_DIR=str(data_dir),
            SPARSETRAIN_STORAGE=str(data_dir / "checkpoints"),
            SPARSETRAIN_MONITOR_INTERVAL_S=str(monitor_interval_s),
            RAY_ADDRESS=ray_address,
        )
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def start(self) -> float:
        """Start it and wait until ``/readyz`` answers 200; returns the seconds that took."""
        started = time.perf_counter()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sparsetrain.service", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready in {READY_TIMEOUT_S:g}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would end it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; returns how it ended."""
        if self.process is None or self.process.poll() is not None:
            return "not running"
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
            return "terminated"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            return "killed"
