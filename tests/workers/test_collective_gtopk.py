"""gTop-k over a real gloo group of spawned processes, without Ray: every rank ends with the
simulator's final vector bit for bit, knows exactly which of its entries the simulator kept,
and counts the bytes it sent."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import torch

from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.runtime.collective import CollectivePeer, Rendezvous
from sparsetrain.workers.runtime.collective_gtopk import exchange_gtopk
from sparsetrain.workers.training.aggregation import gtopk, gtopk_base

LOOPBACK = "127.0.0.1"
DEADLINE_S = 60.0
WORLD = 5  # a power of two (4) and one rank that folds into rank 0
NUMEL, K = 60, 8
CASES = [("plain", torch.float32), ("delta", torch.float16)]


def _payloads(case: int) -> list[SparseUpdate]:
    """Every rank's payload of ``case``: overlapping supports (a small vector), so merges sum
    and re-selection drops."""
    coding, dtype = CASES[case]
    generator = torch.Generator().manual_seed(case)
    payloads = []
    for _ in range(WORLD):
        indices = torch.randperm(NUMEL, generator=generator)[:K].to(torch.int32)
        values = torch.randn(K, generator=generator).to(dtype)
        payloads.append(SparseUpdate(indices, values, NUMEL, index_coding=coding))
    return payloads


def _member(rank: int, ports: Any, results: Any) -> None:
    peer = CollectivePeer(timeout_s=DEADLINE_S, address=LOOPBACK)
    if rank == 0:
        _, port = peer.open(1)
        for _ in range(WORLD - 1):
            ports.put(port)
    else:
        port = ports.get(timeout=DEADLINE_S)
    peer.join(Rendezvous(LOOPBACK, port, 1, WORLD, rank))
    for case in range(len(CASES)):
        mine = _payloads(case)[rank]
        result = exchange_gtopk(peer, rank, WORLD, mine, K)
        total = result.total
        results.put((rank, case, total.indices, total.values, result.kept, result.nbytes))
    peer.close()


def test_every_rank_ends_with_the_simulators_gtopk_bit_for_bit() -> None:
    context = multiprocessing.get_context("spawn")
    ports, results = context.Queue(), context.Queue()
    members = [context.Process(target=_member, args=(r, ports, results)) for r in range(WORLD)]
    for member in members:
        member.start()
    try:
        got = [results.get(timeout=DEADLINE_S) for _ in range(WORLD * len(CASES))]
    finally:
        for member in members:
            member.join(timeout=DEADLINE_S)
            if member.is_alive():
                member.kill()
    base = gtopk_base(WORLD)
    for rank, case, indices, values, kept, nbytes in got:
        payloads = _payloads(case)
        expected = gtopk(payloads, K)
        assert torch.equal(indices.long(), expected.total.indices.long())
        assert values.dtype == CASES[case][1] and torch.equal(values, expected.total.values)
        assert torch.equal(kept, expected.kept[rank])
        assert not bool(expected.kept[rank].all())  # the merges dropped some of its entries
        messages, _, message_bytes = expected.sent[rank]
        mask = 8 + payloads[rank + base].nnz if rank + base < WORLD else 0
        assert nbytes == message_bytes + 8 * messages + mask  # each message's length first


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5, 8, 9])
def test_gtopk_base_is_the_largest_power_of_two_in_the_world(world: int) -> None:
    base = gtopk_base(world)
    assert base <= world < 2 * base and base & (base - 1) == 0
