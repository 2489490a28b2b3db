"""``Network``: N hosts, each a network namespace, on one switch, every port shaped.

The switch is a bridge in a namespace of its own, so nothing is added to the machine's own
network: node ``i`` is namespace ``sptn-<pid>-<run>-n<i>`` with interface ``eth0`` at
``10.231.0.<i+1>/24``, cabled by a veth pair to port ``n<i>`` of the bridge ``br0`` in
``sptn-<pid>-<run>-sw``. The nodes have no route beyond that subnet, so their traffic never
leaves the harness. ``close()`` (also on ``with`` exit, at interpreter exit and on SIGTERM or
SIGHUP) ends every process of the namespaces and deletes them; ``cleanup_stale()`` removes
what a run that was killed outright left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from benchmarks.netharness import netns
from benchmarks.netharness.shaping import Link, ShapingUnsupportedError, qdisc_args

SUBNET = "10.231.0"
PREFIX_LEN = 24
INTERFACE = "eth0"
BRIDGE = "br0"
MAX_NODES = 8
_RUNS = itertools.count()
_N = TypeVar("_N", bound="Network")


@dataclass(frozen=True)
class Node:
    """One host of the network."""

    index: int
    namespace: str
    ip: str
    interface: str
    """The node's interface name inside its namespace (what ``GLOO_SOCKET_IFNAME`` names)."""
    port: str
    """The switch's side of the node's cable, in the switch namespace."""


class Network:
    """N namespaces on one shaped switch; see the module docstring.

    ``link`` is every node's port (default: unshaped), or one ``Link`` per node. Use as a
    context manager, or call ``open()`` and ``close()``. ``open()`` raises
    ``HarnessUnavailableError`` where the machine cannot run it, and
    ``ShapingUnsupportedError`` for a delay or loss without ``netem``.
    """

    def __init__(self, nodes: int = 2, link: Link | Sequence[Link] | None = None) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be in [1, {MAX_NODES}], got {nodes}")
        link = Link() if link is None else link
        links = [link] * nodes if isinstance(link, Link) else list(link)
        if len(links) != nodes:
            raise ValueError(f"{len(links)} links given for {nodes} nodes")
        self.links: list[Link] = links
        self.size = nodes
        self.tag = ""
        self.switch = ""
        self.workdir = Path()
        self.nodes: list[Node] = []
        self._children: list[subprocess.Popen[Any]] = []
        self._cut: dict[int, threading.Timer | None] = {}
        self._lock = threading.RLock()
        self._open = False

    # ---- life cycle -------------------------------------------------------------------------
    def __enter__(self: _N) -> _N:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Create the switch and the nodes, cabled and shaped; removes leftovers of dead
        runs first. On any failure it removes what it created and raises."""
        reason = netns.unavailable_reason()
        if reason is not None:
            raise netns.HarnessUnavailableError(reason)
        if any(link.needs_netem for link in self.links) and not netns.netem_available():
            raise ShapingUnsupportedError(_NO_NETEM)
        netns.cleanup_stale()
        self.nodes, self._children = [], []
        self.tag = _new_tag()
        self.switch = f"{self.tag}-sw"
        self.workdir = netns.WORK_ROOT / self.tag
        _register(self)
        self._open = True
        try:
            self.workdir.mkdir(mode=0o700)
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        sw = self.switch
        netns.run("ip", "netns", "add", sw)
        netns.run("ip", "-n", sw, "link", "set", "lo", "up")
        netns.run("ip", "-n", sw, "link", "add", BRIDGE, "type", "bridge")
        netns.run("ip", "-n", sw, "link", "set", BRIDGE, "up")
        for index in range(self.size):
            ip = f"{SUBNET}.{index + 1}"
            node = Node(index, f"{self.tag}-n{index}", ip, INTERFACE, f"n{index}")
            self.nodes.append(node)
            ns = node.namespace
            netns.run("ip", "netns", "add", ns)
            netns.run("ip", "-n", ns, "link", "set", "lo", "up")
            netns.run(
                "ip", "-n", sw, "link", "add", node.port, "type", "veth",
                "peer", "name", node.interface, "netns", ns,
            )  # fmt: skip
            netns.run("ip", "-n", sw, "link", "set", node.port, "master", BRIDGE)
            netns.run("ip", "-n", sw, "link", "set", node.port, "up")
            address = f"{node.ip}/{PREFIX_LEN}"
            netns.run("ip", "-n", ns, "addr", "add", address, "dev", node.interface)
            netns.run("ip", "-n", ns, "link", "set", node.interface, "up")
            self._apply(node, self.links[index])

    def close(self) -> None:
        """End every process of the network and delete its namespaces and work folder.
        Safe to call twice, and from a signal handler. Raises ``HarnessError`` after
        trying everything if some part would not go."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            for timer in self._cut.values():
                if timer is not None:
                    timer.cancel()
            self._cut.clear()
        problems = []
        for namespace in [node.namespace for node in self.nodes] + [self.switch]:
            try:
                netns.delete(namespace)
            except netns.HarnessError as error:
                problems.append(str(error))
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=netns.KILL_WAIT_S)
        shutil.rmtree(self.workdir, ignore_errors=True)
        _unregister(self)
        if problems:
            raise netns.HarnessError("; ".join(problems))

    # ---- processes --------------------------------------------------------------------------
    def node(self, which: int | Node) -> Node:
        """``self.nodes[which]`` (a ``Node`` is returned as it is)."""
        return which if isinstance(which, Node) else self.nodes[which]

    def env(self, which: int | Node) -> dict[str, str]:
        """The environment of a process on the node: this process's, with the collective
        libraries pointed at the node's interface (else gloo binds to loopback)."""
        interface = self.node(which).interface
        return {**os.environ, "GLOO_SOCKET_IFNAME": interface, "NCCL_SOCKET_IFNAME": interface}

    def argv_in(self, which: int | Node, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command that runs inside the node's namespace."""
        return ["ip", "netns", "exec", self.node(which).namespace, *argv]

    def run_in(
        self,
        which: int | Node,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        **popen: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the node's namespace and return it (not waited for).
        ``env`` adds to or overrides ``self.env(node)``; ``popen`` goes to ``Popen``
        (``stdout``, ``cwd``, ...). It is killed with the node or the network."""
        child: subprocess.Popen[Any] = subprocess.Popen(
            self.argv_in(which, argv),
            env={**self.env(which), **(env or {})},
            stdin=subprocess.DEVNULL,
            **popen,
        )
        self._children.append(child)
        return child

    def node_of(self, pid: int) -> Node | None:
        """The node whose namespace process ``pid`` runs in (None: none of this network's,
        or no such process)."""
        try:
            name = netns.run("ip", "netns", "identify", str(pid)).strip()
        except netns.HarnessError:
            return None
        return next((node for node in self.nodes if node.namespace == name), None)

    def kill_node(self, which: int | Node) -> None:
        """SIGKILL every process in the node's namespace (its cable stays); returns when
        none is left."""
        netns.kill_all(self.node(which).namespace)
        for child in self._children:
            child.poll()  # reap those that were ours

    # ---- the links --------------------------------------------------------------------------
    def shape(self, which: int | Node, link: Link) -> None:
        """Re-shape the node's port, both directions, to ``link`` (a cut port stays cut)."""
        node = self.node(which)
        if link.needs_netem and not netns.netem_available():
            raise ShapingUnsupportedError(_NO_NETEM)
        with self._lock:
            self._apply(node, link)
            self.links[node.index] = link

    def cut(self, which: int | Node, seconds: float | None = None) -> None:
        """Cut the node's cable: from now on every packet to or from it is dropped (its
        interface stays up, as with 100% loss). With ``seconds`` it is healed that long
        after, from a timer thread; returns at once either way."""
        node = self.node(which)
        with self._lock:
            if node.index in self._cut:
                raise netns.HarnessError(f"node {node.index} is already cut")
            netns.run("ip", "-n", self.switch, "link", "set", node.port, "nomaster")
            timer = None
            if seconds is not None:
                timer = threading.Timer(seconds, self.heal, args=(node.index,))
                timer.daemon = True
                timer.start()
            self._cut[node.index] = timer

    def heal(self, which: int | Node) -> None:
        """Reconnect a cut node's cable (its shaping is kept); no-op when it is not cut or
        the network is closed."""
        node = self.node(which)
        with self._lock:
            if not self._open or node.index not in self._cut:
                return
            timer = self._cut.pop(node.index)
            if timer is not None:
                timer.cancel()
            netns.run("ip", "-n", self.switch, "link", "set", node.port, "master", BRIDGE)

    def is_cut(self, which: int | Node) -> bool:
        return self.node(which).index in self._cut

    def _apply(self, node: Node, link: Link) -> None:
        """Shape both directions of the node's cable: the node's sending side on its own
        interface, its receiving side on the switch's port."""
        args = qdisc_args(link)
        for namespace, device in ((node.namespace, node.interface), (self.switch, node.port)):
            if args is None:
                with contextlib.suppress(netns.HarnessError):  # nothing to remove
                    netns.run("tc", "-n", namespace, "qdisc", "del", "dev", device, "root")
            else:
                netns.run("tc", "-n", namespace, "qdisc", "replace", "dev", device, "root", *args)


_NO_NETEM = (
    "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so links cannot add delay or "
    "random loss here; rate shaping (tbf) and cut() work"
)


def _new_tag() -> str:
    """``sptn-<pid>-<run>``, not used by a namespace or work folder yet."""
    taken = set(netns.names())
    for run in _RUNS:
        tag = f"{netns.PREFIX}-{os.getpid()}-{run}"
        if not (netns.WORK_ROOT / tag).exists() and not any(n.startswith(tag + "-") for n in taken):
            return tag
    raise AssertionError("unreachable")


# ---- cleanup on exit and on signals ---------------------------------------------------------
_LIVE: dict[int, Network] = {}
_PREVIOUS: dict[int, Any] = {}
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_REGISTRY_LOCK = threading.Lock()


def _register(network: Network) -> None:
    """Track ``network`` for cleanup; the first live one installs the signal handlers."""
    with _REGISTRY_LOCK:
        if not _PREVIOUS and threading.current_thread() is threading.main_thread():
            for sig in _CLEANUP_SIGNALS:
                _PREVIOUS[sig] = signal.signal(sig, _on_signal)
        _LIVE[id(network)] = network


def _unregister(network: Network) -> None:
    """Stop tracking ``network``; the last one restores the previous signal handlers."""
    with _REGISTRY_LOCK:
        _LIVE.pop(id(network), None)
        if not _LIVE and _PREVIOUS and threading.current_thread() is threading.main_thread():
            for sig, previous in _PREVIOUS.items():
                signal.signal(sig, previous)
            _PREVIOUS.clear()


def close_all() -> None:
    """Close every network of this process that is still open (best effort)."""
    for network in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            network.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    close_all()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


atexit.register(close_all)
