"""gTop-k over a real gloo group of spawned processes, without Ray: every rank ends with the
simulator's final vector bit for bit, knows exactly which of its entries the simulator kept,
and counts the bytes it sent."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.runtime.collective import CollectivePeer
from sparsetrain.workers.runtime.collective_gtopk import exchange_gtopk
from sparsetrain.workers.training.aggregation import gtopk, gtopk_base
from tests.gloo_group import run_group

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


def _member(peer: CollectivePeer, rank: int) -> list[tuple[int, Any, Any, Any, int]]:
    out = []
    for case in range(len(CASES)):
        result = exchange_gtopk(peer, rank, WORLD, _payloads(case)[rank], K)
        total = result.total
        out.append((case, total.indices, total.values, result.kept, result.nbytes))
    return out


def test_every_rank_ends_with_the_simulators_gtopk_bit_for_bit() -> None:
    got = [(rank, *row) for rank, rows in enumerate(run_group(WORLD, _member)) for row in rows]
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
