"""The network harness: namespaces cabled to a switch, shaped links, cuts, and a teardown
that leaves nothing behind (even when the body fails, on SIGTERM, or after SIGKILL via
``cleanup_stale``). Real namespaces and real TCP between them; needs root, ``ip``, ``tc``."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.netharness import (
    Link,
    Network,
    ShapingUnsupportedError,
    cleanup_stale,
    netem_available,
    netns,
)
from benchmarks.netharness.cluster import ROOT
from benchmarks.netharness.shaping import qdisc_args
from tests.harness_gate import require_harness

PORT = 5000
MEGABYTES_5 = 5_000_000
SERVER = """
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.listen(8)
print("ready", flush=True)
while True:
    conn, _ = sock.accept()
    with conn:
        while conn.recv(1 << 20):
            pass
        conn.sendall(b"k")
"""
CLIENT = """
import socket, sys, time
address, size, timeout = (sys.argv[1], int(sys.argv[2])), int(sys.argv[3]), float(sys.argv[4])
with socket.create_connection(address, timeout=timeout) as conn:
    started = time.perf_counter()
    conn.sendall(bytes(size))
    conn.shutdown(socket.SHUT_WR)
    assert conn.recv(1) == b"k"
    print(time.perf_counter() - started)
"""
# A run that opens a network, starts a process in it, says so, and waits to be signalled.
OWNER = """
import subprocess, sys, time
from benchmarks.netharness import Network
net = Network(nodes=2)
net.open()
sleeper = net.run_in(1, ["sleep", "600"])
print(net.tag, sleeper.pid, flush=True)
time.sleep(600)
"""


def _line(process: subprocess.Popen[str], timeout_s: float = 60.0) -> str:
    """The next line ``process`` prints, waiting at most ``timeout_s``."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout_s), "no output in time"
    return process.stdout.readline().strip()


def _serve(net: Network, node: int) -> None:
    """A TCP sink on ``node``'s address: reads to EOF, answers one byte."""
    args = [sys.executable, "-c", SERVER, net.nodes[node].ip, str(PORT)]
    server = net.run_in(node, args, stdout=subprocess.PIPE, text=True)
    assert _line(server) == "ready"


def _send(net: Network, source: int, target: int, size: int, timeout_s: float) -> float | None:
    """Seconds from connected to acknowledged for ``size`` bytes from ``source`` to the sink
    on ``target``, or None when no connection could be made within ``timeout_s``."""
    args = [sys.executable, "-c", CLIENT, net.nodes[target].ip, str(PORT), str(size)]
    done = subprocess.run(
        net.argv_in(source, [*args, str(timeout_s)]),
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
    )
    return float(done.stdout) if done.returncode == 0 else None


def _ours(tag: str) -> list[str]:
    return [name for name in netns.names() if name.startswith(tag + "-")]


def _host_links() -> str:
    return netns.run("ip", "-o", "link", "show")


# ---- without root -------------------------------------------------------------------------


def test_a_link_validates_its_fields_and_picks_its_qdisc() -> None:
    for bad in ({"rate": "fast"}, {"rate": "0mbit"}, {"delay": "1 ms"}, {"loss": 101.0}):
        with pytest.raises(ValueError):
            Link(**bad)  # type: ignore[arg-type]
    assert qdisc_args(Link()) is None
    assert qdisc_args(Link(rate="100mbit"))[:3] == ["tbf", "rate", "100mbit"]  # type: ignore[index]
    assert Link(rate="1gbit").rate_bps == 1e9 and Link(delay="250us").delay_s == 250e-6
    netem = qdisc_args(Link(rate="10mbit", delay="2ms", loss=1.5))
    assert netem is not None and netem[0] == "netem"
    assert "delay" in netem and "2ms" in netem and "1.5%" in netem and "10mbit" in netem
    with pytest.raises(ValueError, match="links given"):
        Network(nodes=2, link=[Link()])


# ---- on namespaces ------------------------------------------------------------------------


def test_a_shaped_link_is_slower() -> None:
    require_harness()
    with Network(nodes=2, link=Link(rate="100mbit")) as net:
        _serve(net, 1)
        slow = _send(net, 0, 1, MEGABYTES_5, timeout_s=30)
        for node in net.nodes:
            net.shape(node, Link(rate="1gbit"))
        fast = _send(net, 0, 1, MEGABYTES_5, timeout_s=30)
    assert slow is not None and fast is not None
    # 5 MB cannot cross a 100 Mbit/s port in less than 0.4 s; at 1 Gbit/s it takes 0.04 s.
    assert slow >= 0.9 * MEGABYTES_5 * 8 / 100e6, (slow, fast)
    assert fast < slow / 2, (slow, fast)


def test_a_delay_is_applied_or_refused_by_name() -> None:
    require_harness()
    link = Link(delay="50ms")
    if not netem_available():
        with pytest.raises(ShapingUnsupportedError, match="netem"):
            Network(nodes=2, link=link).open()
        assert not [name for name in netns.names() if netns.owner(name) == os.getpid()]
        return
    with Network(nodes=2, link=link) as net:
        _serve(net, 1)
        round_trip = _send(net, 0, 1, 0, timeout_s=30)
    # One round trip crosses both ports twice: 4 x 50 ms.
    assert round_trip is not None and round_trip >= 0.19, round_trip


def test_a_cut_drops_every_packet_both_ways_until_healed() -> None:
    require_harness()
    with Network(nodes=2) as net:
        _serve(net, 0)
        _serve(net, 1)
        assert _send(net, 0, 1, 1000, timeout_s=10) is not None
        net.cut(1)
        assert net.is_cut(1)
        assert _send(net, 0, 1, 1000, timeout_s=1.0) is None
        assert _send(net, 1, 0, 1000, timeout_s=1.0) is None
        net.heal(1)
        assert _send(net, 1, 0, 1000, timeout_s=10) is not None
        net.cut(1, seconds=0.5)  # heals itself
        deadline = time.monotonic() + 10
        while net.is_cut(1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not net.is_cut(1)
        assert _send(net, 0, 1, 1000, timeout_s=10) is not None


def test_teardown_leaves_nothing_even_when_the_body_fails() -> None:
    require_harness()
    before = _host_links()
    with pytest.raises(RuntimeError, match="the body failed"), Network(nodes=3) as net:
        sleepers = [net.run_in(node, ["sleep", "600"]) for node in net.nodes]
        # A started process enters its namespace a moment later (``ip netns exec`` forks
        # first): poll, bounded, until every namespace holds its sleeper.
        deadline = time.monotonic() + 30
        while True:
            pids = [pid for node in net.nodes for pid in netns.pids(node.namespace)]
            if len(pids) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        tag, workdir = net.tag, net.workdir
        assert len(pids) == 3 and len(_ours(tag)) == 4 and workdir.is_dir()
        raise RuntimeError("the body failed")
    assert _ours(tag) == []
    assert not workdir.exists()
    assert all(sleeper.returncode is not None for sleeper in sleepers)  # killed and reaped
    assert not any(netns.alive(pid) for pid in pids)
    assert _host_links() == before  # the cables lived and died inside the namespaces


def _owner_run() -> tuple[subprocess.Popen[str], str, int]:
    """A separate process that owns a network with a process in it; returns it, the
    network's tag and that process's pid."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    tag, pid = _line(owner).split()
    assert len(_ours(tag)) == 3 and netns.alive(int(pid))
    return owner, tag, int(pid)


def test_sigterm_to_the_owner_tears_its_network_down() -> None:
    require_harness()
    owner, tag, sleeper = _owner_run()
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=60) == -signal.SIGTERM
    assert _ours(tag) == []
    assert not netns.alive(sleeper)
    assert not (netns.WORK_ROOT / tag).exists()


def test_cleanup_stale_removes_what_a_killed_run_left_and_spares_live_ones() -> None:
    require_harness()
    with Network(nodes=1) as live:
        owner, tag, sleeper = _owner_run()
        owner.kill()  # no cleanup can run: its namespaces and its process stay behind
        owner.wait(timeout=30)
        assert len(_ours(tag)) == 3 and netns.alive(sleeper)
        removed = cleanup_stale()
        assert set(removed) >= {*_ours_names(tag), str(netns.WORK_ROOT / tag)}
        assert _ours(tag) == []
        assert not netns.alive(sleeper)
        assert not (netns.WORK_ROOT / tag).exists()
        assert len(_ours(live.tag)) == 2 and live.workdir.is_dir()


def _ours_names(tag: str) -> set[str]:
    return {f"{tag}-sw", f"{tag}-n0", f"{tag}-n1"}
