"""The ``collective`` transport on a real local Ray cluster: the workers all-gather among
themselves through gloo, many steps per call, and the run equals the ``allgather`` run and
the simulator bit for bit, through evaluations, checkpoints, a lost worker and a join."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest
import ray
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job, start_job
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.result import TrainResult
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0

COLLECTIVE_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 800, "d": 40},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 60,
    "eval": {"every": 25},
    "checkpoint": {"every": 20},
    "schedule": {"kind": "constant", "lr": 0.3},
    "exchange": {"transport": "collective"},
    "seed": 3,
}
_spec = partial(job_spec_model, COLLECTIVE_JOB)


def _groups(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The data of the events that say a collective group was formed."""
    return [e["data"] for e in events if "generation" in (e.get("data") or {})]


def _same_steps(one: TrainResult, other: TrainResult) -> None:
    """The two runs' step records agree on everything but the times."""
    assert [m.step for m in one.steps] == [m.step for m in other.steps]
    for a, b in zip(one.steps, other.steps, strict=True):
        assert (a.loss, a.lr, a.bytes_per_worker, a.bytes_total, a.density, a.workers) == (
            b.loss,
            b.lr,
            b.bytes_per_worker,
            b.bytes_total,
            b.density,
            b.workers,
        )
        assert a.memory_norm == b.memory_norm


def test_a_collective_run_equals_the_allgather_run_and_the_simulator() -> None:
    spec = _spec()
    collective = run_job(spec, verify_replicas=True, timeout_s=DEADLINE_S)
    allgather = run_job(_spec(exchange={"transport": "allgather"}), timeout_s=DEADLINE_S)
    assert collective.params is not None and allgather.params is not None
    assert torch.equal(collective.params, allgather.params)
    assert torch.equal(collective.params, simulate(spec).params)
    _same_steps(collective, allgather)
    assert [e.step for e in collective.evals] == [e.step for e in allgather.evals]
    assert [e.train_loss for e in collective.evals] == [e.train_loss for e in allgather.evals]
    assert all(m.step_s is not None and m.step_s > 0 for m in collective.steps)
    # One group, formed once, carried the steps between the boundaries.
    assert _groups(collective.events) == [{"step": 1, "generation": 1, "workers": 2}]


def test_dense_updates_through_the_collective_equal_the_simulator() -> None:
    spec = _spec(compression={"kind": "none"}, checkpoint={"every": 0}, steps=30)
    result = run_job(spec, timeout_s=DEADLINE_S)
    assert result.params is not None and torch.equal(result.params, simulate(spec).params)
    assert len(_groups(result.events)) == 1


def test_a_worker_killed_inside_a_chunk_is_lost_in_that_step_and_the_rest_continue() -> None:
    """Slot 1 dies at the start of step 7, inside a chunk: the survivors' transfer of step 7
    fails, the step is finished with their updates, and the run equals its replay."""
    spec = _spec(workers={"count": 3, "min": 2, "max": 3}, eval={"every": 0})
    result = run_job(spec, faults=[{"slot": 1, "where": "step", "step": 7}], timeout_s=DEADLINE_S)
    assert result.changes[0] == Change(7, "lost", rank=1)  # a replacement may join later
    assert [m.workers for m in result.steps[6:8]] == [3, 2]
    assert [m.step for m in result.steps] == list(range(60))
    assert result.params is not None
    assert torch.equal(result.params, simulate(spec, changes=result.changes).params)
    groups = _groups(result.events)
    assert groups[0] == {"step": 1, "generation": 1, "workers": 3}
    assert groups[1]["generation"] == 2 and groups[1]["step"] > 7  # the survivors' group
    lost = next(e["message"] for e in result.events if "lost in step 7" in e["message"])
    assert "the collective transfer of step 7 failed" in lost


def test_a_joiner_enters_at_a_chunk_boundary_and_the_run_equals_its_replay() -> None:
    spec = _spec(workers={"count": 2, "min": 1, "max": 3}, eval={"every": 0}, steps=3000)
    supervisor = start_job(spec, storage=None)
    try:
        _wait(supervisor, lambda p: p["step"] >= 20)
        ray.get(supervisor.scale.remote(3))
        _wait(supervisor, lambda p: p["workers"] == 3)
        progress = _wait(supervisor, lambda p: p["state"] not in ("created", "running"))
        assert progress["state"] == "succeeded", progress
        params = torch.from_numpy(ray.get(supervisor.result.remote())["params"].copy())
        changes = [Change.from_dict(c) for c in ray.get(supervisor.membership.remote())]
        events = ray.get(supervisor.event_log.remote())
    finally:
        ray.kill(supervisor)
    assert [c.kind for c in changes] == ["join"]
    assert torch.equal(params, simulate(spec, changes=changes).params)
    assert [g["workers"] for g in _groups(events)] == [2, 3]


def _wait(supervisor: Any, until: Any) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        progress: dict[str, Any] = ray.get(supervisor.progress.remote())
        if until(progress):
            return progress
        assert progress["state"] in ("created", "running", "resizing"), progress
        time.sleep(0.02)
    raise AssertionError("the job never reached the condition")
