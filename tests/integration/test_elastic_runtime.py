"""Elastic jobs on a real local Ray cluster: every run is replayed in the simulator from the
membership history the supervisor recorded, and must match it bit for bit."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import ray
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job, start_job
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.step import Ledger
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0


ELASTIC_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 800, "d": 40},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 3, "min": 1, "max": 4},
    "batch_size": 8,
    "steps": 40,
    "eval": {"every": 0},
    "schedule": {"kind": "constant", "lr": 0.3},
    "seed": 3,
}
_spec = partial(job_spec_model, ELASTIC_JOB)


def _wait(supervisor: Any, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        progress = ray.get(supervisor.progress.remote())
        if until(progress):
            return progress
        assert progress["state"] in ("created", "running", "resizing"), progress
        time.sleep(0.02)
    raise AssertionError("the job never reached the condition")


def _finished(supervisor: Any) -> tuple[torch.Tensor, list[Change], list[dict[str, Any]]]:
    progress = _wait(supervisor, lambda p: p["state"] not in ("created", "running", "resizing"))
    assert progress["state"] == "succeeded", progress
    params = torch.from_numpy(ray.get(supervisor.result.remote())["params"].copy())
    changes = [Change.from_dict(c) for c in ray.get(supervisor.membership.remote())]
    return params, changes, ray.get(supervisor.event_log.remote())


def test_a_killed_worker_is_dropped_within_its_step_and_the_rest_continue() -> None:
    spec = _spec(workers={"count": 3, "min": 2, "max": 3})
    result = run_job(spec, faults=[{"slot": 1, "where": "step", "step": 20}], timeout_s=120)
    assert result.changes[0] == Change(20, "lost", rank=1)
    assert [m.workers for m in result.steps[19:21]] == [3, 2]
    replay = simulate(spec, changes=result.changes)
    assert result.params is not None and torch.equal(result.params, replay.params)


def test_a_stalled_worker_is_dropped_at_the_step_deadline_and_the_rest_continue() -> None:
    spec = _spec(workers={"count": 3, "min": 2, "max": 3}, exchange={"step_timeout_s": 5.0})
    stall = {"slot": 1, "where": "step", "step": 20, "stall_s": 600.0}
    result = run_job(spec, faults=[stall], timeout_s=120)  # raises if it waits the stall out
    assert result.changes[0] == Change(20, "lost", rank=1)
    assert [m.workers for m in result.steps[19:21]] == [3, 2]
    assert [m.step for m in result.steps] == list(range(40))
    lost = [e["message"] for e in result.events if e["kind"] == "worker"]
    assert any("no answer 5 s after the first rank's" in message for message in lost), lost
    replay = simulate(spec, changes=result.changes)
    assert result.params is not None and torch.equal(result.params, replay.params)


def test_scale_up_and_down_while_running_matches_the_replayed_simulation() -> None:
    spec = _spec(workers={"count": 2, "min": 1, "max": 4}, steps=4000)
    supervisor = start_job(spec, storage=None)
    try:
        _wait(supervisor, lambda p: p["step"] >= 20)
        assert ray.get(supervisor.scale.remote(4)) == 2
        _wait(supervisor, lambda p: p["workers"] == 4)
        ray.get(supervisor.scale.remote(1))
        _wait(supervisor, lambda p: p["workers"] == 1)
        with pytest.raises(ray.exceptions.RayTaskError, match=r"outside \[min, max\]"):
            ray.get(supervisor.scale.remote(5))
        params, changes, events = _finished(supervisor)
    finally:
        ray.kill(supervisor)
    kinds = [change.kind for change in changes]
    assert kinds.count("leave") == 1 and sum(c.count for c in changes if c.kind == "join") == 2
    assert any("handed their memory to the aggregate" in e["message"] for e in events)
    ledgers: list[Ledger] = []
    replay = simulate(spec, changes=changes, ledgers=ledgers)
    assert torch.equal(params, replay.params)
    # The replay's books balance: nothing was lost across the resizes.
    gradient = torch.stack([ledger.gradient for ledger in ledgers]).sum(0)
    sent = torch.stack([ledger.sent for ledger in ledgers]).sum(0)
    memory = torch.stack([m.double() for m in replay.memories if m is not None]).sum(0)
    assert (gradient - sent - memory).abs().max() <= 1e-5 * gradient.abs().max()


def test_a_gradient_mode_joiner_holds_the_groups_parameters_and_optimizer_state() -> None:
    """AdamW in gradient mode, scaled 2 -> 3 while running: ``verify_replicas`` compares
    every rank's digest of parameters and optimizer state after every step, the joiner's
    from its first step on, and the run equals its replay."""
    spec = _spec(
        workers={"count": 2, "min": 1, "max": 3},
        optimizer={"kind": "adamw"},
        schedule={"kind": "constant", "lr": 0.05},
        steps=2000,
    )
    supervisor = start_job(spec, storage=None, verify_replicas=True)
    try:
        _wait(supervisor, lambda p: p["step"] >= 10)
        ray.get(supervisor.scale.remote(3))
        _wait(supervisor, lambda p: p["workers"] == 3)
        params, changes, _ = _finished(supervisor)
    finally:
        ray.kill(supervisor)
    assert [c.kind for c in changes] == ["join"]
    assert torch.equal(params, simulate(spec, changes=changes).params)


def test_below_min_the_job_waits_for_a_replacement() -> None:
    spec = _spec(workers={"count": 2, "min": 2, "max": 2}, steps=60)
    result = run_job(spec, faults=[{"slot": 1, "where": "step", "step": 10}], timeout_s=120)
    lost, joined = result.changes
    assert lost == Change(10, "lost", rank=1) and joined.kind == "join" and joined.step == 11
    assert all(m.workers == 2 for m in result.steps if m.step != 10)
    replay = simulate(spec, changes=result.changes)
    assert result.params is not None and torch.equal(result.params, replay.params)


def test_a_worker_killed_during_a_checkpoint_is_dropped_and_the_checkpoint_written(
    tmp_path: Any,
) -> None:
    spec = _spec(
        workers={"count": 3, "min": 2, "max": 3},
        steps=60,
        checkpoint={"every": 20, "path": str(tmp_path)},
    )
    result = run_job(spec, faults=[{"slot": 2, "where": "snapshot", "step": 20}], timeout_s=120)
    assert result.changes[0] == Change(20, "lost", rank=2)
    replay = simulate(spec, changes=result.changes)
    assert result.params is not None and torch.equal(result.params, replay.params)
    resumed = run_job(
        spec.model_copy(update={"resume_from": str(tmp_path / "step-0000000020.ckpt")})
    )
    assert resumed.steps[0].step == 20 and resumed.steps[0].workers == 2


def test_powersgd_warm_start_matches_the_simulator_and_resumes_exactly(tmp_path: Any) -> None:
    """Each worker keeps its own warm-start Q, in the simulator as on Ray, and checkpoints
    carry it: a resumed run ends on the same weights."""
    spec = _spec(
        model={"kind": "mlp", "hidden": [16]},
        compression={"kind": "powersgd", "rank": 2},
        workers={"count": 2},
        steps=30,
        checkpoint={"every": 10},
    )
    full = run_job(spec, "psgdfull", storage=str(tmp_path), timeout_s=120)
    assert full.params is not None
    assert torch.equal(full.params, simulate(spec).params)
    resumed = run_job(
        spec.model_copy(
            update={"resume_from": str(tmp_path / "psgdfull" / "step-0000000020.ckpt")}
        ),
        "psgdresumed",
        storage=str(tmp_path),
        timeout_s=120,
    )
    assert resumed.params is not None and torch.equal(resumed.params, full.params)


def test_autoscale_grows_into_free_resources_up_to_max() -> None:
    spec = _spec(workers={"count": 1, "min": 1, "max": 3, "autoscale": True}, steps=1_000_000)
    supervisor = start_job(spec, storage=None)
    try:
        progress = _wait(supervisor, lambda p: p["workers"] == 3)
        assert progress["target"] == 3
        events = [e["message"] for e in ray.get(supervisor.event_log.remote())]
        assert any(m.startswith("autoscale: the cluster has free resources") for m in events)
        assert not any("target 3 -> 4" in m for m in events)
    finally:
        ray.kill(supervisor)


def test_a_busy_cluster_starts_an_elastic_job_small_and_it_grows_when_resources_free() -> None:
    total = int(ray.cluster_resources()["CPU"])
    deadline = time.monotonic() + DEADLINE_S  # earlier tests' workers release their CPUs
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    blocker = ray.remote(num_cpus=total - 1)(_Idle).remote()
    ray.get(blocker.ready.remote())
    spec = _spec(workers={"count": 3, "min": 1, "max": 3}, steps=1_000_000)
    supervisor = start_job(spec, storage=None)
    try:
        first = _wait(supervisor, lambda p: p["step"] > 0)
        assert first["workers"] == 1 and first["target"] == 3
        ray.kill(blocker)
        _wait(supervisor, lambda p: p["workers"] == 3)
    finally:
        ray.kill(supervisor)
        ray.kill(blocker)


class _Idle:
    def ready(self) -> bool:
        return True
