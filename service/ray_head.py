"""The local Ray head a data dir owns: start it, find it again, stop it.

Without a Ray address, ``sparsetrain serve`` runs its jobs on a Ray head of its own, recorded
in ``<data_dir>/ray/head.json``: the GCS address, the head's temp dir (short, under ``/tmp``,
derived from the data dir, because Ray's socket paths must stay under ~107 characters), the
session id its processes share, and the auth mode. The head runs with token authentication,
its token in ``<data_dir>/ray/auth_token``, so a token elsewhere on the machine
(``~/.ray/auth_token``) changes nothing, and Ray ports that bind every interface still need
the token. The head is started under a new session (``setsid``): every process of it, Ray's
workers included, keeps that session id, and ``stop`` ends exactly those processes.

This module drives the ``ray`` command line and reads ``/proc``; it never imports ray (the
launcher stays the only service module that does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEAD_FILE = "head.json"
TOKEN_FILE = "auth_token"
START_LOG = "ray-start.log"
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
AUTH_MODE = "token"
_PROC = Path("/proc")


class HeadError(RuntimeError):
    """The data dir's Ray head could not be started or stopped."""


@dataclass(frozen=True)
class Head:
    """A Ray head as ``head.json`` records it."""

    host: str
    port: int
    dashboard_port: int
    temp_dir: str
    session_id: int
    """The session (``setsid``) every process of this head belongs to."""
    auth_mode: str
    token_path: str
    started_at: float

    @property
    def address(self) -> str:
        """The GCS address a driver passes to ``ray.init``."""
        return f"{self.host}:{self.port}"

    def auth_env(self) -> dict[str, str]:
        """The environment a driver of this head needs (set before Ray reads its config)."""
        return {"RAY_AUTH_MODE": self.auth_mode, "RAY_AUTH_TOKEN_PATH": self.token_path}


def state_dir(data_dir: Path) -> Path:
    """Where the data dir's head is recorded: ``<data_dir>/ray``."""
    return data_dir.resolve() / "ray"


def temp_dir_for(data_dir: Path) -> str:
    """The head's Ray temp dir: one per data dir and user, short enough for socket paths."""
    key = f"{os.getuid()}:{data_dir.resolve()}".encode()
    return f"/tmp/sparsetrain-ray-{hashlib.sha256(key).hexdigest()[:12]}"


def read(data_dir: Path) -> Head | None:
    """The head recorded for ``data_dir``, or None when none is (or the record is unreadable)."""
    path = state_dir(data_dir) / HEAD_FILE
    try:
        return Head(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def ensure(data_dir: Path, host: str = "127.0.0.1") -> tuple[Head, bool]:
    """The data dir's running head, started if it is not running; returns it and whether it
    was started now.

    Holds a lock on ``<data_dir>/ray`` meanwhile, so two servers on one data dir start one
    head. Processes left by a recorded head that no longer answers are stopped first.
    Writes ``head.json`` (and the token file, once). Raises ``HeadError`` with Ray's message
    when ``ray start`` fails, and ``ValueError`` for a ``host`` that is not an IP address.
    """
    _check_host(host)
    folder = state_dir(data_dir)
    with _locked(folder):
        head = read(data_dir)
        if head is not None and running(head):
            return head, False
        _terminate(_members(temp_dir_for(data_dir), head.session_id if head else None))
        head = _start(folder, temp_dir_for(data_dir), host, _token_file(folder))
        _write(folder, head)
        return head, True


def running(head: Head) -> bool:
    """Whether ``head``'s GCS process is alive and its port accepts connections."""
    if _PROC.is_dir():
        gcs = [
            pid
            for pid, args in _members(head.temp_dir, head.session_id)
            if args and os.path.basename(args[0]) == "gcs_server"
        ]
        if not gcs:
            return False
    try:
        with socket.create_connection((head.host, head.port), timeout=2.0):
            return True
    except OSError:
        return False


def processes(head: Head) -> list[int]:
    """The pids of ``head``'s processes still alive."""
    return [pid for pid, _ in _members(head.temp_dir, head.session_id)]


def stop(data_dir: Path, grace_s: float = STOP_GRACE_S) -> tuple[Head | None, int]:
    """Stop the head recorded for ``data_dir`` and nothing else; returns the record (None:
    there was none) and how many processes were ended.

    Sends SIGTERM to every process of the head, SIGKILL to those alive after ``grace_s``,
    then deletes ``head.json`` (the token file stays). Raises ``HeadError`` if a process
    of the head survives, or where there is no ``/proc`` to find them in.
    """
    if not _PROC.is_dir():
        raise HeadError("stopping the Ray head needs /proc (Linux)")
    if read(data_dir) is None:
        return None, 0  # and create nothing in a data dir that has no head
    with _locked(state_dir(data_dir)):
        head = read(data_dir)
        if head is None:
            return None, 0
        members = _members(head.temp_dir, head.session_id)
        _terminate(members, grace_s)
        left = sorted({pid for pid, _ in members if _alive(pid)} | set(processes(head)))
        if left:
            raise HeadError(f"{len(left)} process(es) of the Ray head survived SIGKILL: {left}")
        (state_dir(data_dir) / HEAD_FILE).unlink(missing_ok=True)
        return head, len(members)


def _check_host(host: str) -> None:
    address = ipaddress.ip_address(host)  # ValueError names the bad value
    if address.is_unspecified:
        raise ValueError(f"the Ray head needs one address to bind, not {host}")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "head.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _token_file(folder: Path) -> Path:
    """The head's auth token file, created (owner-only) with a fresh token if missing."""
    path = folder / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    return path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ray_cli() -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), "ray")
    return candidate if os.path.exists(candidate) else "ray"


def _start(folder: Path, temp_dir: str, host: str, token: Path) -> Head:
    """Run ``ray start --head`` in a new session; returns the head once Ray says it is up."""
    port, dashboard, client, agent = _free_ports(4)
    command = [
        _ray_cli(),
        "start",
        "--head",
        f"--temp-dir={temp_dir}",
        f"--port={port}",
        f"--node-ip-address={host}",
        f"--dashboard-host={host}",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        "--disable-usage-stats",
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER")
    }
    env.update(RAY_AUTH_MODE=AUTH_MODE, RAY_AUTH_TOKEN_PATH=str(token))
    log_path = folder / START_LOG
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code: int | None = child.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    if code != 0:
        _terminate(_members(temp_dir, child.pid))
        child.kill()
        child.wait(timeout=30)
        tail = log_path.read_text(errors="replace").strip()[-500:]
        raise HeadError(f"could not start a local Ray head: {tail}")
    return Head(
        host=host,
        port=port,
        dashboard_port=dashboard,
        temp_dir=temp_dir,
        session_id=child.pid,
        auth_mode=AUTH_MODE,
        token_path=str(token),
        started_at=time.time(),
    )


def _write(folder: Path, head: Head) -> None:
    """Record ``head`` atomically (temp file + rename)."""
    scratch = folder / f".{HEAD_FILE}.tmp"
    scratch.write_text(json.dumps(dataclasses.asdict(head), indent=2) + "\n")
    os.replace(scratch, folder / HEAD_FILE)


def _members(temp_dir: str, session_id: int | None) -> list[tuple[int, list[str]]]:
    """The processes of the head in ``temp_dir``: those whose command line names the temp
    dir, and the others of its session (Ray renames its workers, ``ray::IDLE``) when the
    session is that head's, i.e. one of its processes names the temp dir. Empty without
    ``/proc``."""
    if not _PROC.is_dir():
        return []
    own, session = [], []
    marker = temp_dir.rstrip("/") + "/"
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            sid = os.getsid(pid)
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile, or not ours to see
        args = [arg for arg in args if arg]
        if any(arg == temp_dir or marker in arg or arg.endswith("=" + temp_dir) for arg in args):
            own.append((pid, args))
        elif session_id is not None and sid == session_id:
            session.append((pid, args))
    return own + session if own else []


def _terminate(members: list[tuple[int, list[str]]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM ``members``, then SIGKILL those still alive after ``grace_s``; waits (bounded)
    until they are gone."""
    pids = [pid for pid, _ in members]
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            if pids:
                time.sleep(0.1)
        if not pids:
            return


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: it only waits to be reaped)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
