"""The ring all-reduce of the ``collective`` transport without Ray: each rank's side of the
schedule, run for W = 1..5 through an in-memory ring and for W = 3 over a real gloo group of
spawned processes, ends with the simulator's ``ring_allreduce_mean`` bit for bit and sends
exactly the bytes the traffic model counts; and the check that decides when the ranks'
payloads fit one ring."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from sparsetrain.workers.compression import DenseUpdate, Payload, SparseUpdate
from sparsetrain.workers.compression.payload import shared_indices
from sparsetrain.workers.compression.skipped import SkippedUpdate
from sparsetrain.workers.runtime.collective import CollectivePeer
from sparsetrain.workers.runtime.collective_allreduce import (
    exchange_allreduce,
    ring_allreduce,
    ring_descriptor,
    ring_fits,
)
from sparsetrain.workers.training.aggregation import allreduce_mean, ring_allreduce_mean
from sparsetrain.workers.training.traffic import allreduce_traffic, ring_chunks
from tests.gloo_group import DEADLINE_S, run_group
from tests.memory_ring import MemoryRing


def _vectors(world: int, numel: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    """Values of mixed magnitudes, so the order of the summation shows in the last bits."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(numel, generator=generator) * 10.0 ** (rank % 4 - 1)).to(dtype)
        for rank in range(world)
    ]


def _run_ring(vectors: list[torch.Tensor]) -> tuple[list[tuple[torch.Tensor, int]], list[int]]:
    """Every rank's (mean, bytes sent) and bytes received, each rank on its own thread."""
    world = len(vectors)
    ring = MemoryRing(world)
    with ThreadPoolExecutor(max_workers=world) as pool:
        futures = [
            pool.submit(ring_allreduce, ring.peer(rank), rank, world, vectors[rank])
            for rank in range(world)
        ]
        results = [future.result(timeout=DEADLINE_S) for future in futures]
    return results, ring.received


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("numel", [3, 37, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_rank_ends_with_the_simulators_ring_mean_bit_for_bit(
    world: int, numel: int, dtype: torch.dtype
) -> None:
    vectors = _vectors(world, numel, dtype, seed=world * 100 + numel)
    expected = ring_allreduce_mean(vectors)
    results, received = _run_ring(vectors)
    for rank, (mean, nbytes) in enumerate(results):
        assert mean.dtype == torch.float32 and torch.equal(mean, expected)
        traffic = allreduce_traffic(world, numel, value_bytes=4, rank=rank)
        assert (nbytes, received[rank]) == (traffic.sent, traffic.received)


def test_the_ring_order_is_not_the_rank_order() -> None:
    """The bit-for-bit check above can tell the ring's summation order from another: on its
    data the rank-order fp32 sum differs in some bit."""
    vectors = _vectors(5, 64, torch.float32, seed=564)
    rank_order = torch.zeros(64)
    for vector in vectors:
        rank_order.add_(vector)
    assert not torch.equal(rank_order.div_(5), ring_allreduce_mean(vectors))


@pytest.mark.parametrize("world", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("values", [0, 3, 7, 100])
def test_the_exact_traffic_of_each_rank_sums_to_the_ring_and_stays_under_the_bound(
    world: int, values: int
) -> None:
    chunks = ring_chunks(world, values)
    assert chunks == [len(c) for c in torch.tensor_split(torch.zeros(values), world)]
    ranks = [allreduce_traffic(world, values, rank=r) for r in range(world)]
    moved = 2 * (world - 1) * values * 4
    assert sum(t.sent for t in ranks) == sum(t.received for t in ranks) == moved
    bound = allreduce_traffic(world, values)
    assert all(t.sent <= bound.sent and t.received <= bound.received for t in ranks)


def _shared(numel: int, k: int, seed: int, values: torch.Tensor) -> SparseUpdate:
    return SparseUpdate(shared_indices(numel, k, seed), values, numel, seed)


def test_payloads_fit_one_ring_only_with_one_support() -> None:
    """Dense payloads of one length fit, and shared-seed sparse ones of one seed; a mix, a
    skipped step, another seed or explicit indices falls back to the all-gather."""
    seed = 2**62 + 12345  # a 63-bit seed: its halves travel exactly
    dense = DenseUpdate(torch.ones(10))
    sparse = _shared(10, 3, seed, torch.ones(3))

    def fits(*payloads: Payload) -> bool:
        return ring_fits(np.stack([ring_descriptor(p) for p in payloads]))

    assert fits(dense, dense, dense)
    assert fits(sparse, _shared(10, 3, seed, torch.zeros(3, dtype=torch.float16)))
    assert not fits(dense, DenseUpdate(torch.ones(11)))
    assert not fits(dense, sparse)
    assert not fits(sparse, _shared(10, 3, seed + 1, torch.ones(3)))
    assert not fits(sparse, _shared(10, 4, seed, torch.ones(4)))
    assert not fits(dense, SkippedUpdate(10))
    assert not fits(SkippedUpdate(10), SkippedUpdate(10))
    explicit = SparseUpdate(sparse.indices, sparse.values, 10)
    assert not fits(explicit, explicit)


WORLD = 3
NUMEL, K = 50, 7


def _payloads(case: str) -> list[DenseUpdate | SparseUpdate]:
    """Every rank's payload of ``case``: dense fp32, or shared-seed random-k in fp16."""
    vectors = _vectors(WORLD, NUMEL if case == "dense" else K, torch.float32, seed=len(case))
    if case == "dense":
        return [DenseUpdate(v) for v in vectors]
    return [_shared(NUMEL, K, 99, v.to(torch.float16)) for v in vectors]


def _member(peer: CollectivePeer, rank: int) -> list[tuple[str, torch.Tensor, int]]:
    out = []
    for case in ("dense", "randk"):
        result = exchange_allreduce(peer, rank, WORLD, _payloads(case)[rank])
        out.append((case, result.mean.to_dense(), result.nbytes))
    return out


def test_every_rank_of_a_gloo_group_ends_with_the_simulators_mean() -> None:
    got = [(rank, *row) for rank, rows in enumerate(run_group(WORLD, _member)) for row in rows]
    for rank, case, mean, nbytes in got:
        expected = allreduce_mean(_payloads(case))
        assert expected is not None and torch.equal(mean, expected.to_dense())
        values = NUMEL if case == "dense" else K
        assert nbytes == allreduce_traffic(WORLD, values, value_bytes=4, rank=rank).sent
