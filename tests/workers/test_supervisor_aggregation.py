"""The Ray supervisor refuses to run an aggregation path its transport does not run, before
it touches the cluster: a job never runs another path than the simulator would."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sparsetrain.supervision import ErrorKind, SupervisorState
from sparsetrain.workers.runtime.supervisor import Supervisor
from tests.specs import SMALL_JOB, job_spec_model

DEADLINE_S = 30.0


@pytest.mark.parametrize(
    ("aggregation", "compression"),
    [("allreduce", {"kind": "none"}), ("allreduce", {"kind": "powersgd", "rank": 1})],
)
def test_the_supervisor_fails_a_path_its_transport_does_not_run(
    tmp_path: Path, aggregation: str, compression: dict[str, Any]
) -> None:
    spec = job_spec_model(
        SMALL_JOB,
        compression=compression,
        exchange={"aggregation": aggregation, "transport": "collective"},
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
    assert f"'{aggregation}' is not run by transport 'collective'" in progress["error"]
    assert supervisor.group is None  # refused before any worker was placed
