"""The top-k aggregation paths (``exchange.aggregation``: ``gtopk``, ``partitioned``) on the
``collective`` transport, on a real local Ray cluster: the workers run the path among
themselves over gloo, and the run equals the simulator bit for bit (parameters and every
worker's error-feedback memory), with 2 workers and with 3 (on gTop-k a rank folds into
rank 0; on the partitioned path three owners), through boundaries, a lost worker and the
replacement that joins."""

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
LENGTH_NBYTES = 8  # every point-to-point message goes after its length
PATHS = ["gtopk", "partitioned"]
MESSAGES_AT_TWO = {"gtopk": 1, "partitioned": 2}  # what a rank sends per step at W = 2

TOPK_JOB: dict[str, Any] = {
    "compression": {"kind": "topk", "ratio": 0.1},
    "steps": 40,
    "seed": 5,
}
_spec = partial(job_spec_model, COLLECTIVE_JOB, TOPK_JOB)


def _on(path: str, **fields: Any) -> Any:
    return _spec(exchange={"transport": "collective", "aggregation": path}, **fields)


@pytest.mark.parametrize("path", PATHS)
def test_two_workers_equal_the_simulator_and_count_their_wire_bytes(path: str) -> None:
    spec = _on(path)
    result = run_job(spec, verify_replicas=True, timeout_s=DEADLINE_S)
    simulated = simulate(spec)
    assert_same_state(result, simulated)
    allgather = simulate(_spec(exchange={"transport": "collective", "aggregation": "allgather"}))
    assert not torch.equal(simulated.params, allgather.params)  # the path did run
    # On a collective step each of the 2 workers sends a fixed number of messages: what the
    # simulator counts, plus the length before each. A boundary step publishes the payload
    # through the object store instead, which counts as the all-gather path's step does
    # (the payload's size is fixed: k entries, plain indices).
    lengths = LENGTH_NBYTES * MESSAGES_AT_TWO[path]
    collective = 0
    for ours, theirs, gathered in zip(result.steps, simulated.steps, allgather.steps, strict=True):
        on_path = [n + lengths for n in theirs.bytes_per_worker]
        assert ours.bytes_per_worker in (on_path, gathered.bytes_per_worker), ours.step
        collective += ours.bytes_per_worker == on_path
    assert collective >= len(result.steps) // 2


@pytest.mark.parametrize("path", PATHS)
def test_three_workers_survive_a_loss_and_a_join(path: str) -> None:
    """Three workers that must stay three: slot 1 dies at the start of step 7, inside a
    chunk of steps on the path; step 7 is finished through the object store with the
    survivors' aggregation on the same path, a replacement joins, the three go on in a new
    group, and the run equals its replay in the simulator."""
    spec = _on(path, workers={"count": 3, "min": 3, "max": 3}, eval={"every": 0})
    faults = [{"slot": 1, "where": "step", "step": 7}]
    result = run_job(spec, faults=faults, verify_replicas=True, timeout_s=DEADLINE_S)
    lost, joined = result.changes
    assert lost == Change(7, "lost", rank=1) and joined.kind == "join"
    assert [m.workers for m in result.steps[5:8]] == [3, 3, 2]
    assert result.steps[-1].workers == 3
    assert [m.step for m in result.steps] == list(range(40))
    assert_same_state(result, simulate(spec, changes=result.changes))
