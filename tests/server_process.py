"""The control plane as a real child process on a free port, joined to the test session's
local Ray cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ray

from benchmarks._server import Server as ServerProcess

DEADLINE_S = 120.0


class Server(ServerProcess):
    """The control plane on the test session's Ray cluster, checking its state every 0.2 s."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        address = ray.get_runtime_context().gcs_address
        super().__init__(data_dir, address, monitor_interval_s=0.2, env=env)


def serving(data_dir: Path, **env: str) -> Iterator[Server]:
    """A fixture body: start a ``Server`` on ``data_dir`` with ``env``, yield it, and stop it
    when the fixture is torn down (``yield from serving(...)``)."""
    running = Server(data_dir, **env)
    running.start()
    try:
        yield running
    finally:
        running.stop()


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
