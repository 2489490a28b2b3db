"""The collective transport's wire without Ray: the stats header round trip, and a real gloo
group of spawned processes (payloads of changing lengths, a peer that dies)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.collective import CollectiveError, CollectivePeer, Rendezvous
from sparsetrain.workers.runtime.collective_steps import pack_header, unpack_header
from sparsetrain.workers.training.step import RankStats
from tests.specs import job_spec

LOOPBACK = "127.0.0.1"
DEADLINE_S = 60.0


@pytest.mark.parametrize(
    "stats",
    [
        RankStats(rank=3, loss=0.1234567891234, nbytes=15_596, nnz=3010, compute_s=0.0021,
                  compress_s=0.0003),
        RankStats(rank=0, loss=2.5, nbytes=7, nnz=1, compute_s=1.0, compress_s=2.0,
                  exchange_s=0.5, memory_norm=12.25, wait_s=0.01, call_s=3.75),
    ],
)  # fmt: skip
def test_a_header_carries_a_ranks_stats_exactly(stats: RankStats) -> None:
    row = pack_header(1234, stats)
    assert row.dtype == np.float64 and row[0] == 1234
    assert unpack_header(row) == stats


def _member(rank: int, world: int, ports: Any, results: Any, lengths: list[int]) -> None:
    """One member: join, all-gather payloads of ``lengths[step]`` bytes each step, report
    what it received; the last rank kills itself before the last step."""
    peer = CollectivePeer(timeout_s=DEADLINE_S, address=LOOPBACK)
    if rank == 0:
        _, port = peer.open(1)
        for _ in range(world - 1):
            ports.put(port)
    else:
        port = ports.get(timeout=DEADLINE_S)
    peer.join(Rendezvous(LOOPBACK, port, 1, world, rank))
    for step, length in enumerate(lengths):
        if step == len(lengths) - 1 and rank == world - 1:
            results.close()
            results.join_thread()  # what it reported is on its way before it dies
            os.kill(os.getpid(), signal.SIGKILL)
        payload = np.full(length + rank, rank + step, dtype=np.uint8)
        header = np.array([len(payload), rank, step], dtype=np.float64)
        started = time.monotonic()
        try:
            table, payloads = peer.all_gather(payload, header)
        except CollectiveError as error:
            results.put((rank, step, "broken", str(error), time.monotonic() - started))
            return
        seen = [(int(p.size), int(p[0]) if p.size else -1) for p in payloads]
        results.put((rank, step, table[:, 1:].tolist(), seen))


def test_members_exchange_payloads_of_any_length_and_a_dead_peer_breaks_the_group() -> None:
    world, lengths = 3, [5, 40, 3, 40, 9]
    context = multiprocessing.get_context("spawn")
    ports, results = context.Queue(), context.Queue()
    members = [
        context.Process(target=_member, args=(rank, world, ports, results, lengths))
        for rank in range(world)
    ]
    for member in members:
        member.start()
    try:
        expected = world * (len(lengths) - 1) + world - 1  # the last rank dies before the last
        got = [results.get(timeout=DEADLINE_S) for _ in range(expected)]
    finally:
        for member in members:
            member.join(timeout=DEADLINE_S)
            if member.is_alive():
                member.kill()
    exchanged = [r for r in got if r[2] != "broken"]
    assert len(exchanged) == world * (len(lengths) - 1)
    for _, step, table, seen in exchanged:
        assert table == [[rank, step] for rank in range(world)]
        assert seen == [(lengths[step] + rank, rank + step) for rank in range(world)]
    broken = sorted(r for r in got if r[2] == "broken")
    assert [(rank, step) for rank, step, *_ in broken] == [(0, 4), (1, 4)]
    for *_, message, waited in broken:
        assert message.startswith("a transfer failed") and "/" not in message
        assert waited < DEADLINE_S / 2  # the dead peer's sockets closed: no timeout wait


def test_an_async_job_cannot_ask_for_the_collective_transport() -> None:
    fields = job_spec(exchange={"mode": "async", "transport": "collective"})
    with pytest.raises(ValidationError, match="parameter server"):
        JobSpec.model_validate(fields)
