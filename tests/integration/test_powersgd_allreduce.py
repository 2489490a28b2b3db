"""PowerSGD's all-reduce (``exchange.aggregation: allreduce``) on the ``collective``
transport, on a real local Ray cluster: the workers run the power iteration's ring
all-reduces among themselves, and steps at a boundary (evaluations, checkpoints, a lost
worker, a join) go through the object store with every worker's accumulator; the run equals
the simulator bit for bit (parameters and every worker's memory), and a resumed run ends
where the whole run does (the shared warm-start Q is in the checkpoint)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
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

POWERSGD_JOB: dict[str, Any] = {
    "model": {"kind": "mlp", "hidden": [16]},
    "data": {"kind": "synthetic", "n": 800, "d": 20},
    "compression": {"kind": "powersgd", "rank": 2},
    "exchange": {"transport": "collective", "aggregation": "allreduce"},
    "seed": 13,
}
_spec = partial(job_spec_model, COLLECTIVE_JOB, POWERSGD_JOB)


def test_two_workers_equal_the_simulator_and_resume_exactly(tmp_path: Path) -> None:
    spec = _spec()
    result = run_job(
        spec, "psgd", storage=str(tmp_path), verify_replicas=True, timeout_s=DEADLINE_S
    )
    simulated = simulate(spec)
    assert_same_state(result, simulated)
    exchange = {"transport": "collective", "aggregation": "allgather"}
    gathered = simulate(_spec(exchange=exchange))
    assert gathered.params is not None and simulated.params is not None
    assert not torch.equal(gathered.params, simulated.params)  # the shared subspace ran
    # Collective steps move the factors' ring traffic; boundary steps publish the dense
    # accumulator with the payload through the object store.
    dense = 4 * simulated.params.numel()
    sizes = [n for m in result.steps for n in m.bytes_per_worker]
    assert min(sizes) < dense / 2 and max(sizes) > dense
    resumed = run_job(
        spec.model_copy(update={"resume_from": str(tmp_path / "psgd" / "step-0000000020.ckpt")}),
        "psgdresumed",
        storage=str(tmp_path),
        timeout_s=DEADLINE_S,
    )
    assert resumed.params is not None and torch.equal(resumed.params, result.params)


def test_three_workers_survive_a_loss_and_a_join() -> None:
    """Slot 1 dies at the start of step 7, inside a chunk of ring steps; step 7 is finished
    through the object store from the pair's accumulators, a replacement joins with the
    group's warm-start Q, and the run equals its replay in the simulator."""
    spec = _spec(workers={"count": 3, "min": 3, "max": 3}, eval={"every": 0})
    faults = [{"slot": 1, "where": "step", "step": 7}]
    result = run_job(spec, faults=faults, verify_replicas=True, timeout_s=DEADLINE_S)
    lost, joined = result.changes
    assert lost == Change(7, "lost", rank=1) and joined.kind == "join"
    assert [m.workers for m in result.steps[5:8]] == [3, 3, 2]
    assert result.steps[-1].workers == 3
    assert_same_state(result, simulate(spec, changes=result.changes))
