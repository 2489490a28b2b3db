"""PowerSGD's all-reduce as each rank runs it: over a ring of W ranks (threads, in-memory
links), every rank's ``SharedPowerSGD.rank_mean`` equals the one-process ``mean`` bit for
bit, warm-start Q included; and a worker's published bundle (payload + accumulator) reads
back as it was written."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from sparsetrain.spec import PowerSGDSpec
from sparsetrain.workers.compression import DenseUpdate, build_compressor
from sparsetrain.workers.compression.payload import encode
from sparsetrain.workers.compression.powersgd import PowerSGD
from sparsetrain.workers.runtime.accumulated import bundle, unbundle
from sparsetrain.workers.runtime.collective_allreduce import ring_allreduce
from sparsetrain.workers.training.aggregation import SharedPowerSGD
from tests.gloo_group import DEADLINE_S
from tests.memory_ring import MemoryRing

SHAPES = [(12, 9), (9,), (5, 12), (5,)]
NUMEL = sum(int(np.prod(s)) for s in SHAPES)


def _compressor(warm_start: bool) -> PowerSGD:
    spec = PowerSGDSpec(rank=2, warm_start=warm_start)
    compressor = build_compressor(spec, NUMEL, 3, SHAPES)
    assert isinstance(compressor, PowerSGD)
    return compressor


def _accumulators(world: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(NUMEL, generator=generator) * (1 + r) for r in range(world)]


def _rank_mean(
    shared: SharedPowerSGD,
    ring: MemoryRing,
    rank: int,
    world: int,
    accumulated: torch.Tensor,
    step: int,
) -> torch.Tensor:
    peer = ring.peer(rank)

    def allreduce(vector: torch.Tensor) -> torch.Tensor:
        return ring_allreduce(peer, rank, world, vector)[0]

    return shared.rank_mean(accumulated, allreduce, step)


@pytest.mark.parametrize("warm_start", [True, False])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_every_rank_gets_the_one_process_mean_bit_for_bit(world: int, warm_start: bool) -> None:
    reference = SharedPowerSGD(_compressor(warm_start))
    ranks = [SharedPowerSGD(_compressor(warm_start)) for _ in range(world)]
    for step in range(3):  # warm start carries Q from step to step
        accumulators = _accumulators(world, seed=step)
        expected = reference.mean(accumulators, step)
        ring = MemoryRing(world)
        with ThreadPoolExecutor(max_workers=world) as pool:
            futures = [
                pool.submit(_rank_mean, ranks[r], ring, r, world, accumulators[r], step)
                for r in range(world)
            ]
            results = [future.result(timeout=DEADLINE_S) for future in futures]
        for result in results:
            assert torch.equal(result, expected)
    if warm_start:
        state = reference.state_dict()
        assert state is not None
        for shared in ranks:
            theirs = shared.state_dict()
            assert theirs is not None and all(
                torch.equal(a, b) for a, b in zip(state, theirs, strict=True)
            )


def test_a_joiner_takes_the_groups_warm_start_q() -> None:
    group, joiner = SharedPowerSGD(_compressor(True)), SharedPowerSGD(_compressor(True))
    group.mean(_accumulators(2, seed=0), 0)
    joiner.load_state_dict(group.state_dict())
    accumulators = _accumulators(2, seed=1)
    assert torch.equal(joiner.mean(accumulators, 1), group.mean(accumulators, 1))


def test_a_bundle_reads_back_and_a_plain_payload_passes_through() -> None:
    payload = np.frombuffer(encode(DenseUpdate(torch.arange(4.0))), dtype=np.uint8)
    accumulated = torch.linspace(-1, 1, 7)
    wire, back = unbundle(bundle(payload, accumulated))
    assert bytes(wire) == bytes(payload)
    assert back is not None and torch.equal(back, accumulated)
    assert unbundle(payload) == (payload, None)
    broken = bundle(payload, accumulated)[:20]
    with pytest.raises(ValueError, match="bundle"):
        unbundle(broken)
