"""The ``partitioned`` aggregation path: hashed owners spread hot regions, each owner keeps
the largest sums of its coordinates, the books balance, the traffic matches its model and
the issue's bound, and every rank of a real gloo group ends with the simulator's result
bit for bit."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.runtime.collective import CollectivePeer
from sparsetrain.workers.runtime.collective_partitioned import exchange_partitioned
from sparsetrain.workers.training.partitioned import (
    budget,
    owners,
    part_sizes,
    partitioned,
    quota,
    split_by_owner,
)
from sparsetrain.workers.training.traffic import HEADER_NBYTES, partitioned_traffic
from tests.gloo_group import run_group


def _payloads(
    world: int,
    numel: int,
    k: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    coding: str = "plain",
) -> list[SparseUpdate]:
    generator = torch.Generator().manual_seed(seed)
    payloads = []
    for _ in range(world):
        indices = torch.randperm(numel, generator=generator)[:k].to(torch.int32)
        values = torch.randn(k, generator=generator).to(dtype)
        payloads.append(SparseUpdate(indices, values, numel, index_coding=coding))  # type: ignore[arg-type]
    return payloads


@pytest.mark.parametrize("world", [2, 3, 16, 1024])
def test_owners_cover_every_rank_evenly(world: int) -> None:
    coordinates = torch.arange(1_000_000)
    who = owners(coordinates, world)
    assert torch.equal(who, owners(coordinates, world))  # a pure function
    assert int(who.min()) == 0 and int(who.max()) == world - 1
    counts = torch.bincount(who, minlength=world).double()
    mean = coordinates.numel() / world
    assert float(counts.min()) > 0.85 * mean and float(counts.max()) < 1.15 * mean


def test_a_hot_column_spreads_over_every_owner() -> None:
    """Coordinates one row apart (a weight matrix's column: stride 512), the shape where
    ``coordinate mod W`` would put everything on one owner."""
    world = 16
    column = torch.arange(4096) * 512 + 7
    assert len(set((column % world).tolist())) == 1
    counts = torch.bincount(owners(column, world), minlength=world)
    assert int(counts.min()) > 0.6 * 4096 / world and int(counts.max()) < 1.4 * 4096 / world


def test_quota_and_budget() -> None:
    assert quota(1, 100) == 100 and quota(2, 100) == 50 and quota(4, 100) == 25
    assert quota(16, 100) == math.ceil(100 * 3 / 16)
    assert quota(1024, 100_000) == math.ceil(100_000 * 9 / 1024)
    assert quota(64, 3) == 1  # never zero: every owner applies something
    for world in (2, 5, 16, 64, 1024):
        levels = max(1, math.ceil(math.log2(world)) - 1)
        assert 100 * levels <= budget(world, 100) < 100 * levels + world


@pytest.mark.parametrize("coding", ["plain", "delta"])
@pytest.mark.parametrize("world", [1, 3, 16, 64])
def test_part_sizes_are_the_split_messages_sizes(world: int, coding: str) -> None:
    for numel in (50, 300_000):  # short gaps, and gaps of several varint bytes
        payload = _payloads(1, numel, 40, seed=world, dtype=torch.float16, coding=coding)[0]
        parts = split_by_owner(payload, world)
        assert part_sizes(payload, world) == ([p.nnz for p in parts], [p.nbytes for p in parts])


@pytest.mark.parametrize("world", [2, 3, 5, 8, 16])
def test_the_total_is_exactly_the_kept_contributions(world: int) -> None:
    numel, k = 200, 12
    payloads = _payloads(world, numel, k, seed=world)
    result = partitioned(payloads, k)
    kept_sum, dropped_sum = torch.zeros(numel), torch.zeros(numel)
    for payload, kept in zip(payloads, result.kept, strict=True):
        kept_sum.index_add_(0, payload.indices[kept].long(), payload.values[kept])
        dropped_sum.index_add_(0, payload.indices[~kept].long(), payload.values[~kept])
    assert result.total.nnz <= budget(world, k)
    torch.testing.assert_close(result.total.to_dense(), kept_sum)
    everything = sum(p.to_dense() for p in payloads)
    assert isinstance(everything, torch.Tensor)
    torch.testing.assert_close(kept_sum + dropped_sum, everything)
    assert dropped_sum.abs().sum() > 0  # the selection did drop mass


@pytest.mark.parametrize("world", [2, 5, 16])
def test_each_owner_keeps_the_largest_sums_of_its_coordinates(world: int) -> None:
    numel, k = 300, 20
    payloads = _payloads(world, numel, k, seed=100 + world)
    summed = sum(p.to_dense() for p in payloads)
    assert isinstance(summed, torch.Tensor)
    touched = torch.unique(torch.cat([p.indices.long() for p in payloads]))
    chosen = set(partitioned(payloads, k).total.indices.tolist())
    share = quota(world, k)
    who = owners(touched, world)
    for rank in range(world):
        region = touched[who == rank]
        top = torch.sort(summed[region].abs(), descending=True, stable=True).indices[:share]
        assert set(region[top].tolist()) == chosen & set(region.tolist())


@pytest.mark.parametrize("world", [4, 8, 16, 64])
def test_traffic_matches_the_model_and_stays_within_the_bound(world: int) -> None:
    numel, k = 200_000, 2_000
    result = partitioned(_payloads(world, numel, k, seed=world), k)
    model = partitioned_traffic(world, k, quota(world, k))
    model_entries = (model.sent - 2 * (world - 1) * HEADER_NBYTES) // 8
    bound = 2 * k * math.ceil(math.log2(world))
    for (sent_messages, sent, _), (received_messages, received, _) in zip(
        result.sent, result.received, strict=True
    ):
        assert sent_messages == received_messages == 2 * (world - 1)
        assert abs(sent - model_entries) <= 0.05 * model_entries
        assert abs(received - model_entries) <= 0.1 * model_entries
        assert sent + received <= bound
    assert 2 * model_entries <= bound


def test_the_modelled_traffic_at_1024_workers_is_within_the_bound() -> None:
    k = 100_000  # top-1% of 10M
    for world in (4, 16, 64, 256, 1024):
        model = partitioned_traffic(world, k, quota(world, k))
        entries = (model.total - 4 * (world - 1) * HEADER_NBYTES) / 8
        assert entries <= 2 * k * math.ceil(math.log2(world))


WORLD = 5
NUMEL, K = 90, 9
CASES: list[tuple[str, torch.dtype]] = [("plain", torch.float32), ("delta", torch.float16)]


def _case(case: int) -> list[SparseUpdate]:
    coding, dtype = CASES[case]
    return _payloads(WORLD, NUMEL, K, seed=case, dtype=dtype, coding=coding)


def _member(peer: CollectivePeer, rank: int) -> list[tuple[int, Any, Any, Any, int]]:
    out = []
    for case in range(len(CASES)):
        result = exchange_partitioned(peer, rank, WORLD, _case(case)[rank], K)
        out.append((case, result.total.indices, result.total.values, result.kept, result.nbytes))
    return out


def test_every_rank_of_a_gloo_group_ends_with_the_simulators_result_bit_for_bit() -> None:
    for rank, rows in enumerate(run_group(WORLD, _member)):
        for case, indices, values, kept, nbytes in rows:
            expected = partitioned(_case(case), K)
            assert torch.equal(indices, expected.total.indices)
            assert torch.equal(values, expected.total.values)
            assert torch.equal(kept, expected.kept[rank])
            messages, _, message_bytes = expected.sent[rank]
            assert nbytes == message_bytes + 8 * messages  # each message's length first
