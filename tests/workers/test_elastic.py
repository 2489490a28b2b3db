"""Elastic membership in the simulator: residual hand-off, conservation, re-sharding, lr rule."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch

from sparsetrain.spec import (
    ConstantLR,
    SGDSpec,
    SyntheticSpec,
    TopKSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.training.elastic import Change, changes_at, leaving_ranks, salted_seed
from sparsetrain.workers.training.step import Ledger, WorkerState
from tests.specs import job_spec_model

ELASTIC_JOB: dict[str, Any] = {
    "data": SyntheticSpec(n=800, d=40, test_fraction=0.1),
    "schedule": ConstantLR(lr=0.3),
    "compression": TopKSpec(ratio=0.1),
    "workers": WorkersSpec(count=3, min=1, max=5),
    "batch_size": 8,
    "steps": 40,
    "eval": {"every": 0},
}
job = partial(job_spec_model, ELASTIC_JOB)


GROW_SHRINK = (
    Change(step=10, kind="join", count=2),  # 3 -> 5 before step 10
    Change(step=20, kind="leave", count=4),  # the 4 highest ranks flush in step 20: 5 -> 1
    Change(step=30, kind="join", count=1),  # 1 -> 2
)


def _imbalance(ledgers: list[Ledger], live_memories: list[torch.Tensor | None]) -> torch.Tensor:
    """Σ lr·g over every worker that ever trained - Σ sent - Σ live memory."""
    gradient = torch.stack([ledger.gradient for ledger in ledgers]).sum(0)
    sent = torch.stack([ledger.sent for ledger in ledgers]).sum(0)
    memory = torch.stack([m.double() for m in live_memories if m is not None]).sum(0)
    return gradient - sent - memory


def test_graceful_resizes_conserve_the_gradient_mass() -> None:
    ledgers: list[Ledger] = []
    result = simulate(job(), changes=GROW_SHRINK, ledgers=ledgers)
    assert len(ledgers) == 3 + 2 + 1
    scale = torch.stack([ledger.gradient for ledger in ledgers]).abs().sum(0).max()
    assert _imbalance(ledgers, result.memories).abs().max() <= 1e-5 * scale
    assert [m.workers for m in result.steps[9:12]] == [3, 5, 5]
    assert [m.workers for m in result.steps[19:22]] == [5, 5, 1]
    assert result.steps[31].workers == 2
    # The leavers flushed everything: their last payload is their whole accumulated vector.
    assert result.steps[20].density > result.steps[19].density


def test_a_lost_worker_loses_exactly_its_memory() -> None:
    ledgers: list[Ledger] = []
    result = simulate(job(), changes=(Change(step=15, kind="lost", rank=1),), ledgers=ledgers)
    lost = ledgers[1].gradient - ledgers[1].sent  # its memory when it died
    assert lost.norm() > 0
    assert torch.allclose(_imbalance(ledgers, result.memories), lost, atol=1e-5)
    assert [m.workers for m in result.steps[14:17]] == [3, 2, 2]


def test_without_the_hand_off_the_mass_would_not_balance() -> None:
    """The conservation check can fail: drop a leaver's flush and it does."""
    ledgers: list[Ledger] = []
    result = simulate(job(), changes=(Change(step=20, kind="lost", rank=2),), ledgers=ledgers)
    assert _imbalance(ledgers, result.memories).abs().max() > 1e-3


def test_no_changes_is_the_plain_trajectory_and_replays_are_deterministic() -> None:
    spec = job()
    plain = simulate(spec)
    assert torch.equal(plain.params, simulate(spec, changes=()).params)
    first = simulate(spec, changes=GROW_SHRINK)
    again = simulate(spec, changes=GROW_SHRINK)
    assert torch.equal(first.params, again.params)
    assert not torch.equal(first.params, plain.params)


def test_linear_lr_scaling_follows_the_live_workers() -> None:
    spec = job(workers=WorkersSpec(count=2, min=1, max=4, lr_scaling="linear"))
    result = simulate(spec, changes=(Change(step=5, kind="join", count=2),))
    assert result.steps[4].lr == pytest.approx(0.3)
    assert result.steps[5].lr == pytest.approx(0.6)
    kept = simulate(job(), changes=(Change(step=5, kind="join", count=2),))
    assert {m.lr for m in kept.steps} == {0.3}


def test_joiners_copy_the_first_members_momentum() -> None:
    spec = job(optimizer=SGDSpec(momentum=0.9))
    ledgers: list[Ledger] = []
    result = simulate(spec, changes=(Change(step=10, kind="join", count=1),), ledgers=ledgers)
    assert result.steps[10].workers == 4
    scale = torch.stack([ledger.gradient for ledger in ledgers]).abs().sum(0).max()
    assert _imbalance(ledgers, result.memories).abs().max() <= 1e-5 * scale


def test_regroup_reshards_to_a_disjoint_cover() -> None:
    spec = job()
    dataset = build_dataset(spec.data, spec.seed)
    states = [WorkerState(rank=r, world=3, spec=spec, dataset=dataset, numel=41) for r in range(3)]
    for rank, state in enumerate(states[:2]):
        state.regroup(2, rank, epoch=1)
    rows = torch.cat([s.sampler.indices for s in states[:2]])
    assert sorted(rows.tolist()) == list(range(dataset.n_train))
    restored = WorkerState(rank=0, world=3, spec=spec, dataset=dataset, numel=41)
    restored.load_state_dict(states[1].state_dict())
    assert (restored.world, restored.rank, restored.epoch) == (2, 1, 1)
    assert torch.equal(restored.sampler.indices, states[1].sampler.indices)


def test_change_helpers() -> None:
    changes = [Change(3, "join", 2), Change(3, "lost", rank=1), Change(3, "leave", 1)]
    assert changes_at(changes, 3) == (2, 1, [1])
    assert changes_at(changes, 4) == (0, 0, [])
    assert leaving_ranks(4, 2, [3]) == [1, 2]
    assert salted_seed(7, 0) == 7 and salted_seed(7, 1) != salted_seed(7, 2)
    assert Change.from_dict(changes[1].as_dict()) == changes[1]
