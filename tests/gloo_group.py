"""A real gloo group of spawned processes for the collective transport's schedules, without
Ray: ``run_group(world, work)`` starts ``world`` members, joins them into one
``CollectivePeer`` group over loopback, runs ``work(peer, rank)`` in each and returns what
each returned, in rank order. No member outlives the call."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from typing import Any

from sparsetrain.workers.runtime.collective import CollectivePeer, Rendezvous

LOOPBACK = "127.0.0.1"
DEADLINE_S = 60.0

Work = Callable[[CollectivePeer, int], Any]
"""A member's part: gets its joined peer and rank; returns a picklable result. Must be a
module-level function (the members are spawned)."""


def _member(rank: int, world: int, work: Work, ports: Any, results: Any) -> None:
    peer = CollectivePeer(timeout_s=DEADLINE_S, address=LOOPBACK)
    if rank == 0:
        _, port = peer.open(1)
        for _ in range(world - 1):
            ports.put(port)
    else:
        port = ports.get(timeout=DEADLINE_S)
    try:
        peer.join(Rendezvous(LOOPBACK, port, 1, world, rank))
        # Plain pickle bytes: a queue would hand tensors over as file descriptors served by
        # this process, which may have exited by the time the parent reads them.
        results.put((rank, pickle.dumps(work(peer, rank))))
    finally:
        peer.close()


def run_group(world: int, work: Work) -> list[Any]:
    """Run ``work`` on every member of a ``world``-member gloo group; their results by rank.
    Raises ``queue.Empty`` when a member does not answer within ``DEADLINE_S``."""
    context = multiprocessing.get_context("spawn")
    ports, results = context.Queue(), context.Queue()
    members = [
        context.Process(target=_member, args=(rank, world, work, ports, results))
        for rank in range(world)
    ]
    for member in members:
        member.start()
    try:
        got = dict(results.get(timeout=DEADLINE_S) for _ in range(world))
        answers = {rank: pickle.loads(data) for rank, data in got.items()}
    finally:
        for member in members:
            member.join(timeout=DEADLINE_S)
            if member.is_alive():
                member.kill()
                member.join()
    return [answers[rank] for rank in range(world)]
