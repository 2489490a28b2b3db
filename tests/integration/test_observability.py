"""Where a job's workers run, their logs, evaluations in the log, and the TensorBoard export,
on a real server (tokens on, custom code allowed) over the session's Ray cluster."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray.util.state import list_actors, list_nodes
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.server_process import DEADLINE_S, Server, serving
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
ALICE = {"Authorization": "Bearer t1"}
BOB = {"Authorization": "Bearer t2"}
JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 400, "d": 20, "test_fraction": 0.2},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 4,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(
        tmp_path_factory.mktemp("observability") / "data",
        SPARSETRAIN_API_TOKENS="alice:t1,bob:t2",
        SPARSETRAIN_ALLOW_CUSTOM_CODE="true",
    )


def _get(server: Server, path: str, headers: dict[str, str] = ALICE, **params: Any) -> Any:
    return httpx.get(f"{server.url}{path}", headers=headers, params=params, timeout=30)


def _submit(server: Server, spec: dict[str, Any]) -> str:
    created = httpx.post(f"{server.url}/v1/jobs", json=spec, headers=ALICE, timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _until(server: Server, job_id: str, until: Any) -> dict[str, Any]:
    """Poll alice's job until ``until(job)`` holds (bounded)."""
    deadline = time.monotonic() + DEADLINE_S
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = _get(server, f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the condition: {job}")


def _located(job: dict[str, Any]) -> bool:
    """Both workers have said where they run and have taken a step."""
    rows = job["worker_details"] or []
    return len(rows) == 2 and all(w["pid"] and w["last_step"] is not None for w in rows)


def _job_folder(server: Server, job_id: str) -> Path:
    return server.log_path.parent / "checkpoints" / "alice" / job_id


def test_the_workers_table_matches_rays_state_api(server: Server) -> None:
    job_id = _submit(server, job_spec(JOB, steps=100_000, eval={"every": 0}))
    try:
        job = _until(server, job_id, _located)
        nodes = {node.node_id: node.node_ip for node in list_nodes(address=_gcs())}
        for rank, worker in enumerate(job["worker_details"]):
            assert worker["rank"] == rank and worker["state"] == "training"
            [actor] = list_actors(address=_gcs(), filters=[("name", "=", worker["name"])])
            assert actor.state == "ALIVE" and actor.ray_namespace == "sparsetrain"
            assert (worker["actor_id"], worker["node_id"], worker["pid"]) == (
                actor.actor_id,
                actor.node_id,
                actor.pid,
            )
            assert worker["node_ip"] == nodes[actor.node_id]
            assert worker["gpu_ids"] == []
    finally:
        httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=ALICE, timeout=30)


def _gcs() -> str:
    return str(ray.get_runtime_context().gcs_address)


def test_a_failing_custom_model_shows_its_traceback_to_its_owner_only(server: Server) -> None:
    model = {"kind": "custom", "factory": "tests.workers.custom_model:failing"}
    job_id = _submit(server, job_spec(JOB, model=model, steps=20, max_restarts=0))
    job = _until(server, job_id, lambda j: j["status"] in ("FAILED", "SUCCEEDED"))
    assert job["status"] == "FAILED"
    assert "RuntimeError: the custom model fails on purpose" in job["error"]
    assert "Traceback" not in job["error"]
    logs = _get(server, f"/v1/jobs/{job_id}/logs", source="workers")
    assert logs.status_code == 200
    text = logs.text
    assert "==> worker-0.log <==" in text and "custom forward on a batch of" in text
    sections = dict(part.split(" <==\n", 1) for part in text.split("==> ")[1:])
    assert sections["worker-0.log"].count("Traceback (most recent call last):") == 1
    assert 'raise RuntimeError("the custom model fails on purpose")' in text
    assert str(_job_folder(server, job_id)) not in text
    assert _get(server, f"/v1/jobs/{job_id}/logs", BOB, source="workers").status_code == 404
    events = _get(server, f"/v1/jobs/{job_id}/logs").text.splitlines()
    [failed] = [line for line in events if "status [FAILED]" in line]
    assert "RuntimeError: the custom model fails on purpose" in failed
    assert " log summary: failed after " in events[-1]


def test_evaluations_summary_and_tensorboard_export(server: Server) -> None:
    spec = job_spec(JOB, steps=30, eval={"every": 10}, export={"tensorboard": True})
    job_id = _submit(server, spec)
    job = _until(server, job_id, lambda j: j["status"] == "SUCCEEDED")
    metrics = _get(server, f"/v1/jobs/{job_id}/metrics", max_points=100_000).json()
    assert [m["step"] for m in metrics["steps"]] == list(range(30))
    assert [e["step"] for e in metrics["evals"]] == [0, 10, 20, 30]

    lines = _get(server, f"/v1/jobs/{job_id}/logs").text.splitlines()
    evals = [line for line in lines if " eval evaluation at step " in line]
    assert len(evals) == 4 and " eval evaluation at step 30: train loss " in evals[-1]
    final = metrics["evals"][-1]
    assert lines[-1].endswith(
        f"final loss {final['train_loss']:.4g}, accuracy {final['test_accuracy']:.4g}, "
        f"sent {metrics['steps'][-1]['bytes_total']:,} bytes"
    )
    assert f" log summary: succeeded after {job['step']} steps in " in lines[-1]

    folder = _job_folder(server, job_id) / "tensorboard"
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    for prefix, records in (("step", metrics["steps"]), ("eval", metrics["evals"])):
        for name in records[0]:
            values = [r[name] for r in records]
            if name == "step" or not all(_number(v) for v in values):
                continue
            read = accumulator.Scalars(f"{prefix}/{name}")
            assert [s.step for s in read] == [r["step"] for r in records], name
            for scalar, value in zip(read, values, strict=True):
                assert math.isclose(scalar.value, value, rel_tol=1e-6, abs_tol=1e-30), name
    assert "step/loss" in accumulator.Tags()["scalars"]
    assert "eval/test_accuracy" in accumulator.Tags()["scalars"]

    assert httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=ALICE).status_code == 204
    assert not _job_folder(server, job_id).exists()  # the logs and the export went too


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
