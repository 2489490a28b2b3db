"""The Ray runtime against the single-process simulator, on a real local Ray cluster."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from sparsetrain.errors import CheckpointError, SpecError, TrainingError
from sparsetrain.metrics import StepMetrics
from sparsetrain.service.auth import ANONYMOUS
from sparsetrain.service.launcher import RayLauncher
from sparsetrain.service.storage import StorageLayout
from sparsetrain.spec import ExchangeSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import SupervisorLostError, run_job, start_job
from sparsetrain.workers.runtime.names import NAMESPACE, supervisor_name, worker_name
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]


RAY_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 600, "d": 50},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 25,
    "eval": {"every": 10},
    "seed": 1,
}
_spec = partial(job_spec_model, RAY_JOB)


@pytest.mark.parametrize("transport", ["allgather", "reduce"])
def test_topk_with_memory_matches_the_simulator_step_for_step(transport: str) -> None:
    """Same seeds: identical losses, bytes and evaluations every step, identical weights.

    ``verify_replicas`` makes the supervisor compare every rank's parameter digest after
    every step, so the run also proves the replicas stayed bit-identical throughout.
    """
    spec = _spec(averaging={}, exchange={"transport": transport})
    distributed = run_job(spec, verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    assert distributed.params is not None and local.params is not None
    assert torch.equal(distributed.params, local.params)
    assert [m.loss for m in distributed.steps] == [m.loss for m in local.steps]
    assert [m.bytes_per_worker for m in distributed.steps] == [
        m.bytes_per_worker for m in local.steps
    ]
    assert distributed.evals == local.evals
    for ours, theirs in zip(distributed.memories, local.memories, strict=True):
        assert ours is not None and theirs is not None
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("world", [2, 3])
def test_dense_workers_equal_single_process_large_batch(world: int) -> None:
    """With no compression W workers are large-batch SGD (the simulator is checked
    against a hand-written large-batch loop in tests/workers/test_step.py)."""
    spec = _spec(compression={"kind": "none"}, memory="none", workers={"count": world})
    distributed = run_job(spec, verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    assert distributed.params is not None and local.params is not None
    torch.testing.assert_close(distributed.params, local.params, atol=1e-5, rtol=0)


GRADIENT_MODE = {
    "adamw-topk-reduce": ({"kind": "adamw"}, {"kind": "topk", "ratio": 0.1}, "reduce"),
    "adam-randk": ({"kind": "adam", "clip_norm": 0.5}, {"kind": "randk", "ratio": 0.1}, None),
    "adamw-qsgd": ({"kind": "adamw"}, {"kind": "qsgd", "levels": 4}, None),
    "adam-powersgd": (
        {"kind": "adam", "dense_warmup_steps": 3},
        {"kind": "powersgd", "rank": 1},
        None,
    ),
}


@pytest.mark.parametrize(
    ("optimizer", "compression", "transport"), GRADIENT_MODE.values(), ids=GRADIENT_MODE.keys()
)
def test_gradient_mode_replicas_stay_identical_and_match_the_simulator(
    optimizer: dict[str, Any], compression: dict[str, Any], transport: str | None
) -> None:
    """Compressed gradients into a replicated Adam: ``verify_replicas`` compares every rank's
    digest of parameters and optimizer state after every step; the run equals the
    simulator's bit for bit."""
    spec = _spec(
        model={"kind": "mlp", "hidden": [8]},
        optimizer=optimizer,
        compression=compression,
        schedule={"kind": "constant", "lr": 0.05},
        exchange={"transport": transport or "allgather"},
        steps=15,
    )
    distributed = run_job(spec, verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    assert distributed.params is not None and local.params is not None
    assert torch.equal(distributed.params, local.params)
    assert [m.loss for m in distributed.steps] == [m.loss for m in local.steps]
    assert [m.bytes_sent for m in distributed.steps] == [m.bytes_sent for m in local.steps]
    assert distributed.evals == local.evals


def test_gradient_mode_resume_restores_the_optimizer_state(tmp_path: Path) -> None:
    """AdamW's moments and step count travel in the checkpoint: resuming at step 10 ends on
    the uninterrupted run's weights. A resume that lost them (a fresh Adam) would not."""
    spec = _spec(
        optimizer={"kind": "adamw"},
        schedule={"kind": "constant", "lr": 0.05},
        steps=20,
        checkpoint={"every": 10},
    )
    full = run_job(spec, "adamfull", storage=str(tmp_path), timeout_s=120)
    checkpoint = tmp_path / "adamfull" / f"step-{10:010d}.ckpt"
    resumed = run_job(
        spec.model_copy(update={"resume_from": str(checkpoint)}),
        "adamresumed",
        storage=str(tmp_path),
        timeout_s=120,
    )
    assert full.params is not None and resumed.params is not None
    assert torch.equal(resumed.params, full.params)
    assert [m.loss for m in resumed.steps] == [m.loss for m in full.steps[10:]]


def test_impossible_resources_fail_fast_with_what_was_asked() -> None:
    spec = _spec(workers={"count": 2, "gpus": 1})
    with pytest.raises(SpecError) as info:
        run_job(spec, timeout_s=60)
    message = str(info.value)
    assert "2 GPU asked" in message and "has 0" in message


def test_on_an_autoscaling_cluster_a_job_waits_for_nodes_instead_of_failing_fast(
    tmp_path: Path,
) -> None:
    """With ``cluster_autoscales`` (the service's SPARSETRAIN_CLUSTER_AUTOSCALES) the
    supervisor skips the capacity check and waits ``wait_s`` for the placement group; no
    node comes here, so it then fails naming what it asked for."""
    spec = _spec(workers={"count": 2, "gpus": 1, "wait_s": 1.5})
    layout = StorageLayout(storage=str(tmp_path), data_roots=(str(tmp_path),))
    launcher = RayLauncher(None, layout, owner_of=lambda _: ANONYMOUS, cluster_autoscales=True)
    launcher.submit("autoscales", spec)
    supervisor = ray.get_actor(supervisor_name("autoscales"), namespace=NAMESPACE)
    started = time.monotonic()
    try:
        progress = ray.get(supervisor.progress.remote())
        while progress["state"] in ("created", "running") and time.monotonic() - started < 60:
            time.sleep(0.05)
            progress = ray.get(supervisor.progress.remote())
    finally:
        ray.kill(supervisor)
    assert progress["state"] == "failed" and progress["error_kind"] == "SpecError"
    assert "could not place 2 workers" in progress["error"]
    assert "'GPU': 1" in progress["error"] and "within 1.5s" in progress["error"]
    assert time.monotonic() - started >= 1.5


def test_worker_failure_names_rank_and_step() -> None:
    spec = _spec(compression={"kind": "none"}, schedule={"kind": "constant", "lr": 1e38})
    with pytest.raises(TrainingError) as info:
        run_job(spec, timeout_s=60)
    assert "non-finite" in str(info.value)
    assert "rank 0" in str(info.value) and "step 1" in str(info.value)


def test_a_lost_supervisor_is_a_training_error_not_a_ray_error() -> None:
    job_id = "lostsupervisor"
    killed: list[int] = []

    def kill_the_supervisor(record: StepMetrics) -> None:
        if not killed:  # at the first step the driver sees
            ray.kill(ray.get_actor(supervisor_name(job_id), namespace=NAMESPACE), no_restart=True)
            killed.append(record.step)

    spec = _spec(steps=100_000, eval={"every": 0})
    with pytest.raises(SupervisorLostError, match="supervisor was lost") as info:
        run_job(spec, job_id, on_step=kill_the_supervisor, timeout_s=120)
    assert isinstance(info.value, TrainingError) and killed


def test_actors_are_named_by_job_and_rank() -> None:
    spec = _spec(steps=2000, eval={"every": 0})
    supervisor = start_job(spec, "namecheck")
    try:
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        assert supervisor_name("namecheck") in names
        progress = ray.get(supervisor.progress.remote())
        while progress["step"] == 0 and progress["state"] == "running":
            ray.get(supervisor.metrics.remote(0))  # served while the training thread runs
            progress = ray.get(supervisor.progress.remote())
        assert progress["state"] == "running"
        names = {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE
        }
        assert {worker_name("namecheck", 0), worker_name("namecheck", 1)} <= names
    finally:
        supervisor.stop.remote()
        ray.kill(supervisor)


def test_async_mode_bounds_staleness_and_converges() -> None:
    spec = _spec(
        workers={"count": 3},
        steps=60,
        schedule={"kind": "constant", "lr": 2.0},
        exchange={"mode": "async", "max_staleness": 1},
    )
    result = run_job(spec, timeout_s=120)
    sync = simulate(spec.model_copy(update={"exchange": ExchangeSpec()}))
    assert len(result.steps) == 60
    assert sum(result.staleness.values()) == 60 * 3
    assert max(result.staleness) <= 1
    assert result.final.train_loss < 0.9 * result.evals[0].train_loss
    assert abs(result.final.train_loss - sync.final.train_loss) < 0.05 * sync.final.train_loss


def test_async_mode_replaces_a_killed_worker_and_finishes() -> None:
    """Worker 1 dies in its 10th update: a new worker takes its rank, the job still applies
    60 rounds of 3 updates within the staleness bound and converges like the sync run."""
    spec = _spec(
        workers={"count": 3},
        steps=60,
        schedule={"kind": "constant", "lr": 2.0},
        exchange={"mode": "async", "max_staleness": 1},
    )
    result = run_job(spec, faults=[{"slot": 1, "where": "compute", "step": 9}], timeout_s=120)
    sync = simulate(spec.model_copy(update={"exchange": ExchangeSpec()}))
    assert len(result.steps) == 60
    assert sum(result.staleness.values()) == 60 * 3
    assert max(result.staleness) <= 1
    (event,) = [e for e in result.events if e["kind"] == "worker"]
    assert event["message"].startswith("worker 1 (slot 1) died after")
    assert "a new worker (slot 3) takes its place" in event["message"]
    assert abs(result.final.train_loss - sync.final.train_loss) < 0.05 * sync.final.train_loss


def test_async_mode_fails_when_a_replacement_dies_before_its_first_update() -> None:
    spec = _spec(workers={"count": 2}, steps=30, exchange={"mode": "async", "max_staleness": 1})
    faults = [
        {"slot": 0, "where": "compute", "step": 5},
        {"slot": 2, "where": "compute", "step": 6},  # the replacement's first update
    ]
    with pytest.raises(TrainingError, match="died again before its replacement delivered"):
        run_job(spec, faults=faults, timeout_s=120)


def test_async_with_zero_staleness_is_serial() -> None:
    spec = _spec(steps=10, exchange={"mode": "async", "max_staleness": 0})
    result = run_job(spec, timeout_s=120)
    assert result.staleness == {0: 20}


def test_checkpoint_resume_follows_the_same_trajectory(tmp_path: Path) -> None:
    """Resume from the step-20 checkpoint of a 30-step run: same steps, same weights."""
    spec = _spec(steps=30, averaging={}, checkpoint={"every": 10}, eval={"every": 5})
    full = run_job(spec, "ckfull", storage=str(tmp_path), timeout_s=120)
    saved = sorted(path.name for path in (tmp_path / "ckfull").iterdir() if path.is_file())
    assert saved == ["model.pt", *(f"step-{n:010d}.ckpt" for n in (10, 20, 30))]
    resumed_spec = spec.model_copy(
        update={"resume_from": str(tmp_path / "ckfull" / f"step-{20:010d}.ckpt")}
    )
    resumed = run_job(resumed_spec, "ckresumed", storage=str(tmp_path), timeout_s=120)
    assert resumed.params is not None and full.params is not None
    assert torch.equal(resumed.params, full.params)
    assert [m.step for m in resumed.steps] == list(range(20, 30))
    supervisor = start_job(resumed_spec, "ckprogress", storage=str(tmp_path))
    try:
        progress = ray.get(supervisor.progress.remote())
        while progress["state"] == "running":
            progress = ray.get(supervisor.progress.remote())
        assert progress["step"] == 30
        late = ray.get(supervisor.metrics.remote(25))["steps"]
        assert [record["step"] for record in late] == list(range(25, 30))
    finally:
        ray.kill(supervisor)
    assert [m.loss for m in resumed.steps] == [m.loss for m in full.steps[20:]]
    assert resumed.evals == [e for e in full.evals if e.step >= 20]


def test_a_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    spec = _spec(steps=10)
    run_job(spec, "ckbase", storage=str(tmp_path), timeout_s=120)
    path = tmp_path / "ckbase" / f"step-{10:010d}.ckpt"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        run_job(spec.model_copy(update={"resume_from": str(path)}), timeout_s=60)
