"""``Cluster``: a ``Network`` with one Ray node per namespace, the head on node 0.

The head listens on ``<node 0's ip>:6379`` with token authentication and a token of its
own (``<workdir>/auth_token``), so a token elsewhere on the machine changes nothing; every
node and every process started with ``run_in`` gets ``RAY_AUTH_MODE=token``, the token's
path and ``RAY_ADDRESS`` in its environment. Each node has its own short Ray temp dir under
the network's work folder (Ray's socket paths must stay under ~107 characters). A driver
must run inside a namespace to reach the cluster: ``run_in(0, ...)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.netharness import netns
from benchmarks.netharness.network import Network, Node
from benchmarks.netharness.shaping import Link

GCS_PORT = 6379
START_TIMEOUT_S = 180.0
ROOT = Path(__file__).resolve().parents[2]
_DROPPED_ENV = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")


class Cluster(Network):
    """N Ray nodes, one per namespace, on a shaped switch; see the module docstring.

    ``cpus_per_node`` and ``gpus_per_node`` are what each node offers Ray (``head_cpus``:
    node 0's CPUs, when they differ; 0 keeps training off the head);
    ``object_store_bytes`` caps each node's object store; ``ray_env`` adds environment
    variables to every node (Ray's ``RAY_*`` settings, say). ``open()`` returns once every
    node has joined, or raises ``HarnessError`` with Ray's message (after removing it all).
    """

    def __init__(
        self,
        nodes: int = 2,
        link: Link | Sequence[Link] | None = None,
        *,
        cpus_per_node: int = 1,
        head_cpus: int | None = None,
        gpus_per_node: int = 0,
        object_store_bytes: int = 200 * 1024**2,
        ray_env: dict[str, str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        super().__init__(nodes, link)
        self.cpus_per_node = cpus_per_node
        self.head_cpus = cpus_per_node if head_cpus is None else head_cpus
        self.gpus_per_node = gpus_per_node
        self.object_store_bytes = object_store_bytes
        self.ray_env = dict(ray_env or {})
        self.start_timeout_s = start_timeout_s

    @property
    def address(self) -> str:
        """The head's GCS address, reachable from inside every node's namespace."""
        return f"{self.nodes[0].ip}:{GCS_PORT}"

    @property
    def token_path(self) -> Path:
        return self.workdir / "auth_token"

    def env(self, which: int | Node) -> dict[str, str]:
        """``Network.env`` with this cluster's Ray address and token, and ``ray_env``."""
        env = {k: v for k, v in super().env(which).items() if k not in _DROPPED_ENV}
        env.update(
            RAY_ADDRESS=self.address,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_path),
            RAY_TMPDIR=str(self.workdir),  # else drivers keep session folders in /tmp/ray
        )
        env.update(self.ray_env)
        return env

    def open(self) -> None:
        """Build the network, start the head and the other nodes, and wait until all of
        them are alive in the cluster."""
        super().open()
        try:
            descriptor = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(os.urandom(32).hex())
            for node in self.nodes:
                self.start_node(node)
            self.wait_for_nodes(len(self.nodes))
        except BaseException:
            self.close()
            raise

    def start_node(self, which: int | Node) -> None:
        """``ray start`` on the node: the head on node 0, a worker joining it elsewhere."""
        node = self.node(which)
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        argv = [
            ray, "start",
            f"--node-ip-address={node.ip}",
            f"--temp-dir={self.workdir / f'r{node.index}'}",
            f"--num-cpus={self.head_cpus if node.index == 0 else self.cpus_per_node}",
            f"--num-gpus={self.gpus_per_node}",
            f"--object-store-memory={self.object_store_bytes}",
            "--disable-usage-stats",
        ]  # fmt: skip
        if node.index == 0:
            argv += ["--head", f"--port={GCS_PORT}", "--include-dashboard=false"]
        else:
            argv += [f"--address={self.address}"]
        log = self.workdir / f"ray-start-{node.index}.log"
        with log.open("wb") as out:
            child = self.run_in(node, argv, stdout=out, stderr=subprocess.STDOUT)
            try:
                code = child.wait(timeout=self.start_timeout_s)
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            tail = log.read_text(errors="replace").strip()[-800:]
            raise netns.HarnessError(f"ray start on node {node.index} failed: {tail}")

    def wait_for_nodes(self, count: int, timeout_s: float | None = None) -> list[dict[str, str]]:
        """Wait until ``count`` nodes are alive in the cluster (asked from node 0); returns
        them as ``{"ip", "node_id"}``. Raises ``HarnessError`` after ``timeout_s``."""
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        argv = [sys.executable, "-m", "benchmarks.netharness.driver", "nodes"]
        argv += ["--count", str(count), "--timeout", str(timeout_s)]
        child = self.run_in(0, argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = child.communicate(timeout=timeout_s + 60)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        if child.returncode != 0:
            message = err.decode(errors="replace").strip()[-800:]
            raise netns.HarnessError(f"the cluster's nodes did not all join: {message}")
        nodes: list[dict[str, str]] = json.loads(out)
        return nodes
