"""``exchange.overlap`` on a real local Ray cluster: each worker runs a step's exchange on
its exchange thread while the next step computes, and the run equals the simulator's
overlapped schedule bit for bit (parameters and every worker's memory), on the all-gather
and the ring all-reduce; a worker killed inside an overlapped chunk returns the survivors
to the chunk's start, where the dead one is lost, and the run equals its replay."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.training.elastic import Change
from tests.same_state import assert_same_state
from tests.specs import COLLECTIVE_JOB, job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0

OVERLAP_JOB: dict[str, Any] = {
    "optimizer": {"kind": "sgd", "momentum": 0.9},
    "exchange": {"transport": "collective", "overlap": 4},
    "seed": 5,
}
_spec = partial(job_spec_model, COLLECTIVE_JOB, OVERLAP_JOB)


@pytest.mark.parametrize(
    ("compression", "aggregation"),
    [({"kind": "topk", "ratio": 0.1}, "allgather"), ({"kind": "none"}, "allreduce")],
)
def test_overlapped_steps_equal_the_simulator(
    compression: dict[str, Any], aggregation: str
) -> None:
    spec = _spec(
        compression=compression,
        exchange={"transport": "collective", "aggregation": aggregation, "overlap": 4},
    )
    result = run_job(spec, verify_replicas=True, timeout_s=DEADLINE_S)
    simulated = simulate(spec)
    assert_same_state(result, simulated)
    plain = spec.model_copy(update={"exchange": spec.exchange.model_copy(update={"overlap": 0})})
    assert result.params is not None and not torch.equal(result.params, simulate(plain).params)
    assert [m.step for m in result.steps] == list(range(spec.steps or 0))


def test_a_worker_lost_inside_an_overlapped_chunk_is_lost_at_its_start() -> None:
    """Three workers that must stay three, top-k: slot 1 dies at the start of step 7, inside
    the chunk of steps 1-9 (step 0 evaluates; checkpoints every 10). The two survivors fail
    their transfer, return to step 1, run it through the object store without the dead
    one, a replacement joins, and the run equals its replay."""
    spec = _spec(
        compression={"kind": "topk", "ratio": 0.1},
        workers={"count": 3, "min": 3, "max": 3},
        eval={"every": 0},
    )
    faults = [{"slot": 1, "where": "step", "step": 7}]
    result = run_job(spec, faults=faults, verify_replicas=True, timeout_s=DEADLINE_S)
    lost, joined = result.changes
    assert lost == Change(1, "lost", rank=1) and joined == Change(2, "join")
    assert [m.workers for m in result.steps[:3]] == [3, 2, 3]
    assert [m.step for m in result.steps] == list(range(spec.steps or 0))
    assert_same_state(result, simulate(spec, changes=result.changes))
