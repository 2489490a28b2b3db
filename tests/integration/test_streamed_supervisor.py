"""The supervisor of a streamed Parquet job reads the table's metadata and one row group at a
time (to validate it and learn its statistics), and ships the workers a table that holds
no rows: on a real Ray cluster its process's peak resident memory grows by a small fraction
of the table while two workers train on it. (The workers' own bound is
``tests/workers/test_streamed_memory.py``.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import ray

from sparsetrain.supervision import SupervisorState
from sparsetrain.workers.runtime.names import NAMESPACE, supervisor_name
from sparsetrain.workers.runtime.supervisor import Supervisor
from tests.peak_memory import (
    reset_peak,
    status_bytes,
    streamed_logistic_job,
    write_float_table,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

WIDTH, GROUP_ROWS, GROUPS = 64, 5_000, 120  # about 158 MB of rows decoded
CAP = 16 << 20


def _wait_until_final(supervisor: Any, timeout_s: float) -> dict[str, Any]:
    """Poll ``supervisor`` until its state is final; its last progress. ``TimeoutError``
    after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress: dict[str, Any] = ray.get(supervisor.progress.remote())
        if SupervisorState(progress["state"]).is_final:
            return progress
        if time.monotonic() > deadline:
            raise TimeoutError(f"job still {progress['state']} after {timeout_s}s: {progress}")
        time.sleep(0.2)


def test_the_supervisor_of_a_streamed_job_never_holds_the_table(tmp_path: Path) -> None:
    table_bytes = write_float_table(
        tmp_path / "big.parquet", GROUPS * GROUP_ROWS, GROUP_ROWS, WIDTH, seed=1
    )
    data = {
        "kind": "parquet",
        "path": str(tmp_path / "big.parquet"),
        "label": "y",
        "stream": True,
        "stream_memory": CAP,
    }
    spec = streamed_logistic_job(data, batch_size=256, steps=30, max_rows=20_000)
    job_id = "streamedsupervisor"
    # The actor ``start_job`` creates, created here apart from its start, so that what its
    # process holds before it sees the job is known: imports, Ray's own threads.
    supervisor: Any = (
        ray.remote(Supervisor)
        .options(
            name=supervisor_name(job_id),
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=0,
            max_concurrency=4,
        )
        .remote(job_id, spec.model_dump_json(), str(tmp_path / "storage"))
    )
    try:
        pid: int = ray.get(supervisor.pid.remote())
        before = status_bytes(pid, "VmRSS")
        reset_peak(pid)
        ray.get(supervisor.start.remote())
        progress = _wait_until_final(supervisor, timeout_s=120)
        growth = status_bytes(pid, "VmHWM") - before  # it lives on until killed
    finally:
        ray.kill(supervisor)
    assert progress["state"] == SupervisorState.SUCCEEDED, progress
    assert progress["step"] == 30, progress
    # Measured: 41 MB (the reader's import, torch's first allocations, one row group's
    # decode while it scans); holding the rows would take at least table_bytes.
    assert growth < table_bytes / 2, (growth, table_bytes)
