"""Named network namespaces through ``ip``/``tc``: run commands, end a namespace's processes,
delete it, and find the leftovers of harness runs whose process is gone.

Every namespace the harness makes is named ``sptn-<owner pid>-<run>-<role>``; its work
folder is ``/tmp/sptn-<owner pid>-<run>``. A name whose owner no longer runs is a leftover.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

PREFIX = "sptn"
WORK_ROOT = Path("/tmp")
COMMAND_TIMEOUT_S = 30.0
KILL_WAIT_S = 15.0
_OWNED = re.compile(rf"^{PREFIX}-(\d+)-")


class HarnessError(RuntimeError):
    """An ``ip``/``tc`` command failed, or a namespace's processes would not die."""


class HarnessUnavailableError(HarnessError):
    """This machine cannot run the harness; the message says why (``unavailable_reason``)."""


def run(*argv: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a short command and return its stdout; raises ``HarnessError`` with its stderr
    when it fails or outlives ``timeout_s``."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as error:
        raise HarnessError(f"{' '.join(argv)}: no answer within {timeout_s:g}s") from error
    if done.returncode != 0:
        raise HarnessError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@functools.cache
def unavailable_reason() -> str | None:
    """Why this machine cannot run the harness (not root, no ``ip``/``tc``, namespaces
    refused), or None when it can. Creates and deletes one probe namespace, once."""
    if not os.path.isdir("/proc") or not hasattr(os, "geteuid"):
        return "the network harness needs Linux"
    if os.geteuid() != 0:
        return "the network harness needs root (network namespaces, tc)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"the network harness needs iproute2: {' and '.join(missing)} not found"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        run("ip", "netns", "add", probe)
    except HarnessError as error:
        return f"cannot create a network namespace: {error}"
    delete(probe)
    return None


@functools.cache
def netem_available() -> bool:
    """Whether the kernel has the ``netem`` qdisc (delay and loss); probes once in a
    scratch namespace."""
    probe = f"{PREFIX}-{os.getpid()}-netem"
    run("ip", "netns", "add", probe)
    try:
        run("tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        return True
    except HarnessError:
        return False
    finally:
        delete(probe)


def names() -> list[str]:
    """The named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def pids(namespace: str) -> list[int]:
    """The processes running in ``namespace`` (none when it does not exist)."""
    try:
        out = run("ip", "netns", "pids", namespace)
    except HarnessError:
        return []
    return [int(word) for word in out.split()]


def kill_all(namespace: str, wait_s: float = KILL_WAIT_S) -> None:
    """SIGKILL every process of ``namespace``, again for any it forks meanwhile, until none
    is left; raises ``HarnessError`` naming the survivors after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = pids(namespace)
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HarnessError(f"processes of {namespace} survived SIGKILL: {alive}")
        time.sleep(0.05)


def delete(namespace: str) -> None:
    """End every process of ``namespace``, then delete it (and with it its interfaces and
    their peers); a namespace that does not exist is already deleted."""
    if namespace not in names():
        return
    kill_all(namespace)
    try:
        run("ip", "netns", "delete", namespace)
    except HarnessError:
        if namespace in names():  # else another cleanup deleted it meanwhile
            raise


def owner(name: str) -> int | None:
    """The pid that created a harness namespace or work folder named ``name``."""
    match = _OWNED.match(name)
    return int(match.group(1)) if match else None


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cleanup_stale() -> list[str]:
    """Remove what harness runs whose process has ended left behind: their namespaces (and
    every process in them) and their work folders. Never touches a live run's. Returns
    what it removed."""
    removed = []
    for name in names():
        pid = owner(name)
        if pid is not None and not alive(pid):
            delete(name)
            removed.append(name)
    for folder in WORK_ROOT.glob(f"{PREFIX}-*"):
        pid = owner(folder.name)
        if folder.is_dir() and pid is not None and not alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
