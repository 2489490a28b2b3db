"""``ray_head.stop`` ends the recorded head's processes and nothing else, on real processes
standing in for a head (no Ray here: ``tests/integration/test_server_restart.py`` runs the
real one)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparsetrain.service import ray_head

# A session leader that names no temp dir and starts one child that does (Ray's gcs_server
# and raylet name it; its renamed workers do not), like a head started under setsid.
_LEADER = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)',"
    " '--log-dir=' + os.environ['HEAD_TEMP_DIR'] + '/session_1/logs'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)
_SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _record(data_dir: Path, temp_dir: str, session_id: int) -> ray_head.Head:
    head = ray_head.Head(
        host="127.0.0.1",
        port=1,
        dashboard_port=2,
        temp_dir=temp_dir,
        session_id=session_id,
        auth_mode="token",
        token_path=str(data_dir / "ray" / "auth_token"),
        started_at=0.0,
    )
    folder = ray_head.state_dir(data_dir)
    folder.mkdir(parents=True)
    (folder / ray_head.HEAD_FILE).write_text(json.dumps(dataclasses.asdict(head)))
    return head


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is left of them is killed afterwards."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait(timeout=30)


def _wait_running(pid: int) -> None:
    deadline = time.monotonic() + 30
    while not _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_stop_ends_the_recorded_session_and_spares_other_processes(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    temp_dir = str(tmp_path / "head-tmp")
    leader = subprocess.Popen(
        [sys.executable, "-c", _LEADER],
        env={**os.environ, "HEAD_TEMP_DIR": temp_dir},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    spawned.append(leader)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    bystander = subprocess.Popen(_SLEEPER, start_new_session=True)
    spawned.append(bystander)
    _wait_running(child)
    head = _record(tmp_path / "data", temp_dir, leader.pid)
    try:
        assert ray_head.stop(tmp_path / "data", grace_s=5.0) == (head, 2)
        assert leader.wait(timeout=30) == -signal.SIGTERM
        assert not _running(child)
        assert bystander.poll() is None
        assert not (tmp_path / "data" / "ray" / ray_head.HEAD_FILE).exists()
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_stop_spares_a_session_that_is_not_the_heads(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    """The recorded session id now belongs to processes that name no temp dir of the head
    (the head died and the id was reused): they are left alone."""
    other = subprocess.Popen(_SLEEPER, start_new_session=True)
    spawned.append(other)
    head = _record(tmp_path / "data", str(tmp_path / "head-tmp"), other.pid)
    assert ray_head.stop(tmp_path / "data", grace_s=5.0) == (head, 0)
    assert other.poll() is None


def test_stop_without_a_record_creates_nothing(tmp_path: Path) -> None:
    assert ray_head.stop(tmp_path / "data") == (None, 0)
    assert not (tmp_path / "data").exists()


def test_the_temp_dir_is_short_and_one_per_data_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 150)
    first, second = ray_head.temp_dir_for(deep / "a"), ray_head.temp_dir_for(deep / "b")
    assert first != second and len(first) <= 40
    assert ray_head.temp_dir_for(deep / "a") == first
