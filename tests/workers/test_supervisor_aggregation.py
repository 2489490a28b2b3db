"""The Ray supervisor refuses to run an aggregation path its transport does not run, before
it touches the cluster: a job never runs another path than the simulator would."""

from __future__ import annotations

import time
from pathlib import Path

from sparsetrain.supervision import ErrorKind, SupervisorState
from sparsetrain.workers.runtime.supervisor import Supervisor
from tests.specs import SMALL_JOB, job_spec_model

DEADLINE_S = 30.0


def test_the_supervisor_fails_a_path_its_transport_does_not_run(tmp_path: Path) -> None:
    """PowerSGD's all-reduce: the one path the collective transport does not run."""
    spec = job_spec_model(
        SMALL_JOB,
        compression={"kind": "powersgd", "rank": 1},
        exchange={"aggregation": "allreduce", "transport": "collective"},
    )
    supervisor = Supervisor("job", spec.model_dump_json(), str(tmp_path))
    supervisor.start()
    deadline = time.monotonic() + DEADLINE_S
    progress = supervisor.progress()
    while not SupervisorState(progress["state"]).is_final and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a thread's state, bounded by the deadline
        progress = supervisor.progress()
    assert progress["state"] == SupervisorState.FAILED, progress
    assert progress["error_kind"] == ErrorKind.SPEC
    assert progress["error"].startswith("exchange.aggregation: ")
    assert "'allreduce' with 'powersgd' is not run" in progress["error"]
    assert supervisor.group is None  # refused before any worker was placed
