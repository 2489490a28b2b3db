"""A multi-node harness on one machine: N hosts, each a Linux network namespace, on a switch
whose every port is shaped with ``tc``; one Ray node per host (``Cluster``), or just the
network (``Network``). Needs root and iproute2 (``ip``, ``tc``); ``unavailable_reason()``
says why not where they are missing.

    with Cluster(nodes=2, link=Link(rate="100mbit")) as cluster:
        driver = Driver(cluster, spec)      # run_job inside node 0's namespace
        driver.wait_for_step(100, timeout_s=120)
        cluster.cut(1, seconds=30)          # or cluster.kill_node(1)
        outcome = driver.outcome(timeout_s=300)
"""

from benchmarks.netharness.cluster import Cluster
from benchmarks.netharness.jobs import Driver, DriverError
from benchmarks.netharness.netns import (
    HarnessError,
    HarnessUnavailableError,
    cleanup_stale,
    netem_available,
    unavailable_reason,
)
from benchmarks.netharness.network import Network, Node
from benchmarks.netharness.shaping import Link, ShapingUnsupportedError

__all__ = [
    "Cluster",
    "Driver",
    "DriverError",
    "HarnessError",
    "HarnessUnavailableError",
    "Link",
    "Network",
    "Node",
    "ShapingUnsupportedError",
    "cleanup_stale",
    "netem_available",
    "unavailable_reason",
]
