"""``sparsetrain serve`` without a Ray address owns its Ray head: a real server process
starts it (with a ``~/.ray/auth_token`` from elsewhere on the machine), stops cleanly on
SIGTERM, finds the head again on restart, never joins another data dir's head, and
``sparsetrain stop-ray`` ends exactly that head's processes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks._server import Server as ServerProcess
from sparsetrain.service.ray_head import temp_dir_for
from tests.server_process import wait_for_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]
STEPS = 3000
_NOT_INHERITED = (
    "RAY_ADDRESS",
    "SPARSETRAIN_RAY_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER",
)


class OwnHeadServer(ServerProcess):
    """The control plane with no Ray address (so on its data dir's own head), ``HOME``
    set to ``home``."""

    def __init__(self, data_dir: Path, home: Path) -> None:
        super().__init__(data_dir, ray_address="", monitor_interval_s=0.2)
        for key in _NOT_INHERITED:
            self.env.pop(key, None)
        self.env["HOME"] = str(home)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _head(data_dir: Path) -> dict[str, Any]:
    return dict(json.loads((data_dir / "ray" / "head.json").read_text()))


def _head_processes(head: dict[str, Any]) -> list[str]:
    """Live processes (zombies excluded) that name the head's temp dir or are in its
    session, read from /proc independently of the code under test."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if state != "Z" and (
            head["temp_dir"].encode() in cmdline or int(session) == head["session_id"]
        ):
            found.append(f"{entry.name} {cmdline[:100]!r}")
    return found


def _stop_ray(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """The documented command, through the CLI."""
    return subprocess.run(
        [sys.executable, "-m", "sparsetrain", "stop-ray", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _spec() -> dict[str, Any]:
    return {
        "model": {"kind": "logistic_regression"},
        "data": {"kind": "synthetic", "n": 400, "d": 20},
        "compression": {"kind": "topk", "ratio": 0.1},
        "workers": {"count": 1},
        "batch_size": 4,
        "steps": STEPS,
        "seed": 0,
    }


def _cleanup(servers: list[OwnHeadServer], data_dirs: list[Path]) -> None:
    """Stop every server and head this test started, whatever state it failed in."""
    for server in servers:
        server.stop()
    for data_dir in data_dirs:
        head = {"temp_dir": temp_dir_for(data_dir), "session_id": -1}
        if (data_dir / "ray" / "head.json").exists():
            head = _head(data_dir)
            _stop_ray(data_dir)
        for line in _head_processes(head):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        shutil.rmtree(head["temp_dir"], ignore_errors=True)  # the head's logs


def test_own_head_restart_stop_and_isolation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    servers: list[OwnHeadServer] = []
    try:
        first = OwnHeadServer(first_dir, home)
        servers.append(first)
        first.start()
        head = _head(first_dir)
        assert head["host"] == "127.0.0.1" and head["auth_mode"] == "token"
        job_id = httpx.post(f"{first.url}/v1/jobs", json=_spec(), timeout=10).json()["id"]
        wait_for_job(first.url, job_id, lambda j: j["status"] == "RUNNING" and j["step"] > 0)

        assert first.stop() == "terminated"
        log = first.log()
        assert "disconnected from Ray" in log, log[-3000:]  # the lifespan ran to its end
        assert "SIGTERM received" not in log  # uvicorn had the signal, not Ray's handler
        assert _head_processes(head), "the head must outlive the server"

        again = OwnHeadServer(first_dir, home)
        servers.append(again)
        again.start()
        assert _head(first_dir) == head  # found again, not started anew
        job = wait_for_job(again.url, job_id, lambda j: j["status"] == "SUCCEEDED")
        assert job["step"] == STEPS
        steps = httpx.get(
            f"{again.url}/v1/jobs/{job_id}/metrics", params={"max_points": 100_000}, timeout=30
        ).json()["steps"]
        assert [m["step"] for m in steps] == list(range(STEPS))
        assert again.stop() == "terminated"

        record = (first_dir / "ray" / "head.json").stat().st_mtime_ns
        other = OwnHeadServer(second_dir, home)
        servers.append(other)
        other.start()
        other_head = _head(second_dir)
        assert other_head["port"] != head["port"]
        assert other_head["temp_dir"] != head["temp_dir"]
        assert other_head["session_id"] != head["session_id"]
        assert f"started the local Ray head at 127.0.0.1:{other_head['port']}" in other.log()
        assert f":{head['port']}" not in other.log()
        assert (first_dir / "ray" / "head.json").stat().st_mtime_ns == record
        assert other.stop() == "terminated"

        stopped = _stop_ray(first_dir)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the Ray head at 127.0.0.1:{head['port']}" in stopped.stdout
        assert _head_processes(head) == []
        assert not (first_dir / "ray" / "head.json").exists()
        assert _head_processes(other_head), "stop-ray must leave another data dir's head alone"
        assert _stop_ray(second_dir).returncode == 0
        assert _head_processes(other_head) == []
        again_stopped = _stop_ray(first_dir)
        assert again_stopped.returncode == 0 and "no Ray head" in again_stopped.stdout
    finally:
        _cleanup(servers, [first_dir, second_dir])
