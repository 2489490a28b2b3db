"""Chaos: real processes SIGKILLed on a local Ray cluster while jobs run.

Each scenario checks that the job completes, that its final training loss is within 5% of
the same job without faults (the simulator's run of the spec), that its events tell what
happened, and that every step's metrics are stored exactly once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.runtime.names import NAMESPACE, supervisor_name
from sparsetrain.workers.training.checkpoint import load_checkpoint
from tests.server_process import Server, serving, wait_for_job
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
STEPS = 1500
LOSS_TOLERANCE = 0.05


CHAOS_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 2000, "d": 40},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2, "min": 1, "max": 4},
    "schedule": {"kind": "constant", "lr": 0.3},
    "batch_size": 16,
    "steps": STEPS,
    "eval": {"every": 500},
    "checkpoint": {"every": 100},
    "seed": 5,
}
_spec = partial(job_spec, CHAOS_JOB)


_BASELINES: dict[str, float] = {}


def _fault_free_loss(spec: dict[str, Any]) -> float:
    """The final training loss of ``spec`` without faults (the simulator runs exactly the
    workers' steps)."""
    key = JobSpec.model_validate(spec).model_dump_json()
    if key not in _BASELINES:
        _BASELINES[key] = simulate(JobSpec.model_validate(spec)).final.train_loss
    return _BASELINES[key]


def _check_outcome(url: str, job_id: str, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Wait for success; check the loss and the metric records; return the job and its log."""
    job = wait_for_job(url, job_id, lambda j: j["status"] == "SUCCEEDED", deadline_s=300)
    loss, baseline = job["result"]["final"]["train_loss"], _fault_free_loss(spec)
    assert abs(loss - baseline) <= LOSS_TOLERANCE * baseline, (loss, baseline)
    steps = httpx.get(
        f"{url}/v1/jobs/{job_id}/metrics", params={"max_points": 100_000}, timeout=30
    ).json()["steps"]
    assert [m["step"] for m in steps] == list(range(STEPS))
    log = httpx.get(f"{url}/v1/jobs/{job_id}/logs", timeout=30).text
    return job, log


def _submit(url: str, spec: dict[str, Any]) -> str:
    response = httpx.post(f"{url}/v1/jobs", json=spec, timeout=10)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def _supervisor(job_id: str) -> Any:
    return ray.get_actor(supervisor_name(job_id), namespace=NAMESPACE)


def _running_past(url: str, job_id: str, step: int) -> dict[str, Any]:
    return wait_for_job(url, job_id, lambda j: j["status"] == "RUNNING" and j["step"] > step)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("chaos") / "data")


def test_sigkill_a_worker(server: Server) -> None:
    spec = _spec()
    job_id = _submit(server.url, spec)
    _running_past(server.url, job_id, 200)
    pids = ray.get(_supervisor(job_id).worker_pids.remote())
    os.kill(pids[1], signal.SIGKILL)
    job, log = _check_outcome(server.url, job_id, spec)
    assert "worker 1 (slot 1) lost in step" in log and "its memory (norm" in log
    assert "resized 1 -> 2 before step" in log  # the replacement joined
    assert job["restarts"] == 0


def test_sigkill_the_supervisor(server: Server) -> None:
    spec = _spec()
    job_id = _submit(server.url, spec)
    _running_past(server.url, job_id, 300)
    supervisor = _supervisor(job_id)
    folder = Path(ray.get(supervisor.checkpoint_list.remote())[-1]["path"]).parent
    os.kill(ray.get(supervisor.pid.remote()), signal.SIGKILL)
    # Truncate its newest checkpoint: the relaunch must skip it and say so. The new
    # supervisor is a new process that imports torch before it reads a checkpoint, so this
    # write lands first.
    *_, used, newest = sorted(folder.glob("step-*.ckpt"))
    newest.write_bytes(newest.read_bytes()[:-100])
    job, log = _check_outcome(server.url, job_id, spec)
    assert job["restarts"] == 1
    assert "[RECOVERING]" in log and "supervisor relaunched (restart 1 of at most 3)" in log
    assert f"skipped checkpoint {newest.name}: truncated checkpoint" in log
    step = int(used.stem.removeprefix("step-"))
    assert f"resumed from checkpoint {used.name} (step {step})" in log
    assert log.index("[RECOVERING]") < log.index(f"recovered: training from step {step}")


def test_scale_2_to_4_to_1_while_running(server: Server) -> None:
    spec = _spec()
    job_id = _submit(server.url, spec)
    _running_past(server.url, job_id, 100)
    patch = httpx.patch(f"{server.url}/v1/jobs/{job_id}", json={"workers": {"count": 4}})
    assert patch.status_code == 200, patch.text
    wait_for_job(server.url, job_id, lambda j: j["workers"] == 4)
    httpx.patch(f"{server.url}/v1/jobs/{job_id}", json={"workers": {"count": 1}})
    wait_for_job(server.url, job_id, lambda j: j["workers"] == 1 or j["status"] == "SUCCEEDED")
    job, log = _check_outcome(server.url, job_id, spec)
    assert "2 -> 4 workers" in log and "4 -> 1 workers" in log
    assert "handed their memory to the aggregate" in log
    assert job["step"] == STEPS and job["target_workers"] == 1


def test_sigkill_the_service(tmp_path: Path) -> None:
    spec = _spec()
    first = Server(tmp_path / "data")
    first.start()
    try:
        job_id = _submit(first.url, spec)
        _running_past(first.url, job_id, 100)
    finally:
        first.kill()
    second = Server(tmp_path / "data")
    second.start()
    try:
        _, log = _check_outcome(second.url, job_id, spec)
        assert "[SUCCEEDED] finished" in log
    finally:
        second.stop()


def test_sigkill_a_worker_during_a_checkpoint_write(tmp_path: Path) -> None:
    checkpoint = {"every": 100, "path": str(tmp_path), "keep": 100}
    spec = JobSpec.model_validate(_spec(checkpoint=checkpoint))
    result = run_job(spec, faults=[{"slot": 1, "where": "snapshot", "step": 300}])
    assert [(c.step, c.kind) for c in result.changes][:1] == [(300, "lost")]
    assert [m.step for m in result.steps] == list(range(STEPS))
    baseline = _fault_free_loss(_spec())
    assert abs(result.final.train_loss - baseline) <= LOSS_TOLERANCE * baseline
    # The checkpoint being written when the worker died holds the survivor's state, whole.
    written = load_checkpoint(str(tmp_path / "step-0000000300.ckpt"))
    assert written.step == 300 and len(written.workers) == 1
    resumed = run_job(spec.model_copy(update={"resume_from": str(tmp_path), "steps": STEPS + 20}))
    assert resumed.steps[0].step == STEPS
