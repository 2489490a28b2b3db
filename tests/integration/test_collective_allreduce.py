"""``exchange.aggregation: allreduce`` on the ``collective`` transport, on a real local Ray
cluster: the workers run the ring all-reduce among themselves (point to point over gloo),
dense and shared-seed random-k, and the run equals the simulator bit for bit (parameters
and every worker's error-feedback memory), with 2 workers and with 3 through a dense
warm-up, boundaries, a lost worker and a replacement that joins."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
import torch

from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.result import TrainResult
from tests.same_state import assert_same_state
from tests.specs import COLLECTIVE_JOB, job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0

ALLREDUCE_JOB: dict[str, Any] = {
    "compression": {"kind": "none"},
    "exchange": {"transport": "collective", "aggregation": "allreduce"},
    "seed": 11,
}
_spec = partial(job_spec_model, COLLECTIVE_JOB, ALLREDUCE_JOB)


def _ring_steps(ray_run: TrainResult, simulated: TrainResult, gathered: TrainResult) -> list[int]:
    """The steps that ran the ring on Ray, checking every step's bytes per worker: a ring
    step's are the simulator's (its model counts what the ring sends, exactly); a boundary
    step went through the object store and counts each payload once, as the ``allgather``
    run ``gathered`` of the same steps does."""
    ring = []
    for ours, theirs, once in zip(ray_run.steps, simulated.steps, gathered.steps, strict=True):
        assert theirs.bytes_per_worker != once.bytes_per_worker, ours.step
        assert ours.bytes_per_worker in (theirs.bytes_per_worker, once.bytes_per_worker), ours
        if ours.bytes_per_worker == theirs.bytes_per_worker:
            ring.append(ours.step)
    return ring


def _allgather(spec: JobSpec, changes: Sequence[Change] = ()) -> TrainResult:
    """The simulated run of ``spec`` with ``aggregation: allgather`` (the exact mean)."""
    exchange = spec.exchange.model_copy(update={"aggregation": "allgather"})
    return simulate(spec.model_copy(update={"exchange": exchange}), changes=list(changes))


def test_dense_allreduce_on_two_workers_equals_the_simulator_and_counts_its_wire_bytes() -> None:
    spec = _spec()
    result = run_job(spec, verify_replicas=True, timeout_s=DEADLINE_S)
    simulated = simulate(spec)
    assert_same_state(result, simulated)
    assert result.params is not None
    # A ring of 2 sends each rank's half twice (partials, then totals) in raw fp32 values.
    assert simulated.steps[0].bytes_per_worker == [result.params.numel() * 4] * 2
    ring = _ring_steps(result, simulated, _allgather(spec))
    assert len(ring) >= len(result.steps) // 2  # most steps ran between the boundaries


def test_shared_randk_allreduce_on_three_workers_survives_a_loss_and_a_join() -> None:
    """fp16 random-k with a shared seed after 3 dense warm-up steps, 3 workers that must stay
    3: slot 1 dies at the start of step 7, inside a chunk of ring steps; step 7 is finished
    through the object store by the pair, a replacement joins, the three go on in a new
    group, and the run equals its replay in the simulator."""
    spec = _spec(
        compression={"kind": "randk", "ratio": 0.25, "shared_seed": True, "value_dtype": "float16"},
        optimizer={"kind": "sgd", "dense_warmup_steps": 3},
        workers={"count": 3, "min": 3, "max": 3},
        eval={"every": 0},
    )
    faults = [{"slot": 1, "where": "step", "step": 7}]
    result = run_job(spec, faults=faults, verify_replicas=True, timeout_s=DEADLINE_S)
    lost, joined = result.changes
    assert lost == Change(7, "lost", rank=1) and joined.kind == "join"
    assert [m.workers for m in result.steps[5:8]] == [3, 3, 2]
    assert result.steps[-1].workers == 3
    replay = simulate(spec, changes=result.changes)
    assert_same_state(result, replay)
    exact = _allgather(spec, result.changes)
    # The ring's order of summation shows: the exact mean gives other bits.
    assert exact.params is not None and replay.params is not None
    assert not torch.equal(exact.params, replay.params)
    ring = _ring_steps(result, replay, exact)
    assert {1, 2} <= set(ring)  # the dense warm-up ran the dense ring
    assert len([step for step in ring if step > joined.step]) >= 10  # the new group's ring
