"""``exchange.aggregation: gtopk`` on the ``collective`` transport, on a real local Ray
cluster: the workers run gTop-k among themselves (recursive doubling over gloo), and the run
equals the simulator bit for bit (parameters and every worker's error-feedback memory),
with 2 workers and with 3 (a rank folds into rank 0), through boundaries and a lost worker."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.result import TrainResult
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0
LENGTH_NBYTES = 8  # every point-to-point message goes after its length

GTOPK_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 800, "d": 40},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 40,
    "eval": {"every": 15},
    "checkpoint": {"every": 10},
    "schedule": {"kind": "constant", "lr": 0.3},
    "exchange": {"transport": "collective", "aggregation": "gtopk"},
    "seed": 5,
}
_spec = partial(job_spec_model, GTOPK_JOB)


def _same_state(ray_run: TrainResult, simulated: TrainResult) -> None:
    """Parameters and every live worker's memory agree bit for bit."""
    assert ray_run.params is not None and torch.equal(ray_run.params, simulated.params)
    assert len(ray_run.memories) == len(simulated.memories)
    for ours, theirs in zip(ray_run.memories, simulated.memories, strict=True):
        assert ours is not None and theirs is not None
        assert torch.equal(ours, theirs.cpu())


def test_gtopk_on_two_workers_equals_the_simulator_and_counts_its_wire_bytes() -> None:
    spec = _spec()
    result = run_job(spec, verify_replicas=True, timeout_s=DEADLINE_S)
    simulated = simulate(spec)
    _same_state(result, simulated)
    allgather = simulate(_spec(exchange={"transport": "collective", "aggregation": "allgather"}))
    assert not torch.equal(simulated.params, allgather.params)  # gTop-k did run
    # With 2 workers each sends one message of its k entries: what the simulator counts,
    # plus the length before it on a collective step; boundary steps all-gather the same
    # payload through the object store.
    extra = [
        [ours - theirs for ours, theirs in zip(a.bytes_per_worker, b.bytes_per_worker, strict=True)]
        for a, b in zip(result.steps, simulated.steps, strict=True)
    ]
    assert all(step in ([0, 0], [LENGTH_NBYTES] * 2) for step in extra), extra
    assert extra.count([LENGTH_NBYTES] * 2) >= len(extra) // 2


def test_gtopk_on_three_workers_survives_a_worker_lost_inside_a_chunk() -> None:
    """Slot 1 dies at the start of step 7, inside a chunk of 3-worker gTop-k steps; step 7
    is finished through the object store with the survivors' gTop-k, the pair goes on in a
    new group, and the run equals its replay in the simulator."""
    spec = _spec(workers={"count": 3, "min": 2, "max": 3}, eval={"every": 0})
    faults = [{"slot": 1, "where": "step", "step": 7}]
    result = run_job(spec, faults=faults, verify_replicas=True, timeout_s=DEADLINE_S)
    assert result.changes[0] == Change(7, "lost", rank=1)  # a replacement may join later
    assert [m.workers for m in result.steps[5:8]] == [3, 3, 2]
    assert [m.step for m in result.steps] == list(range(40))
    _same_state(result, simulate(spec, changes=result.changes))
