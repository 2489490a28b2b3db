"""What a Ray run's step records and events say, on a real local Ray cluster: step timing
that adds up (the wait for other ranks' updates included), running byte totals across a
resume, the checkpoint a resume used, and a worker lost after the last step."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.runtime.worker import TrainingWorker
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.step import step_metrics
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]

JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 600, "d": 50},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 8,
    "schedule": {"kind": "constant", "lr": 0.3},
    "steps": 20,
    "eval": {"every": 0},
    "seed": 4,
}
_spec = partial(job_spec_model, JOB)


def test_step_records_time_every_phase_and_count_bytes_like_the_simulator() -> None:
    spec = _spec()
    result = run_job(spec, timeout_s=120)
    local = simulate(spec)
    assert [m.bytes_total for m in result.steps] == [m.bytes_total for m in local.steps]
    assert result.steps[-1].bytes_total == result.bytes_sent
    for record in result.steps:
        assert record.step_s is not None
        phases = record.compute_s + record.compress_s + record.wait_s + record.exchange_s
        assert phases + record.other_s == pytest.approx(record.step_s, rel=1e-6)
    assert all(record.wait_s > 0 for record in result.steps)  # the calls' transit at least


@ray.remote
def _arrives_late(update: np.ndarray, seconds: float) -> np.ndarray:
    """``update``, handed on after ``seconds``: a slow link, as the receiving rank sees it."""
    time.sleep(seconds)
    return update


def test_the_time_updates_take_to_arrive_is_the_steps_wait() -> None:
    """As the sync loop times a step: late updates (a slow link) show as ``wait_s``, outside
    the rank's own call; an async worker times its wait for late parameters itself."""
    spec = _spec(workers={"count": 1})
    initial = np.zeros(50, dtype=np.float32)  # d = 50 weights
    worker: Any = ray.remote(TrainingWorker).remote(spec.model_dump_json(), 0, 1, initial)
    try:
        update, _ = worker.step.options(num_returns=2).remote(0)
        ray.get(update)
        started = time.perf_counter()
        _, info = worker.step.options(num_returns=2).remote(1, _arrives_late.remote(update, 0.5))
        stats = ray.get(info)["stats"]
        record = step_metrics(1, 0.1, [stats], 50, step_s=time.perf_counter() - started)
        late_params = _arrives_late.remote(initial, 0.5)
        _, info = worker.compute_at.options(num_returns=2).remote(0, [late_params], 0)
        async_stats = ray.get(info)["stats"]
    finally:
        ray.kill(worker)
    assert stats.call_s is not None and stats.call_s < 0.5 <= record.wait_s
    phases = record.compute_s + record.compress_s + record.exchange_s + record.other_s
    assert phases + record.wait_s == pytest.approx(record.step_s, rel=1e-9)
    assert async_stats.wait_s >= 0.5


def test_a_resume_says_which_checkpoint_it_used_and_which_it_skipped(tmp_path: Path) -> None:
    spec = _spec(checkpoint={"every": 10})
    full = run_job(spec, "truncfull", storage=str(tmp_path), timeout_s=120)
    newest = tmp_path / "truncfull" / f"step-{20:010d}.ckpt"
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[:-100])
    resumed = run_job(
        spec.model_copy(update={"resume_from": str(tmp_path / "truncfull")}),
        "truncresumed",
        storage=str(tmp_path),
        timeout_s=120,
    )
    assert [m.step for m in resumed.steps] == list(range(10, 20))
    assert [e["message"] for e in resumed.events if e["kind"] == "checkpoint"] == [
        f"skipped checkpoint {newest.name}: truncated checkpoint ({size - 100} of {size} bytes)",
        f"resumed from checkpoint step-{10:010d}.ckpt (step 10)",
    ]
    # The running byte total carries on from the checkpoint.
    assert [m.bytes_total for m in resumed.steps] == [m.bytes_total for m in full.steps[10:]]


def test_a_worker_lost_in_the_last_apply_leaves_the_finished_job_succeeded(
    tmp_path: Path,
) -> None:
    spec = _spec(workers={"count": 3, "min": 2, "max": 3}, eval={"every": 10})
    faults = [{"slot": 0, "where": "finish", "step": 20}]  # rank 0 evaluates, so it matters
    result = run_job(spec, "lastapply", storage=str(tmp_path), faults=faults, timeout_s=120)
    assert result.changes == [Change(20, "lost", rank=0)]
    assert "worker 0 (slot 0) lost after the last step" in result.events[-1]["message"]
    replay = simulate(spec, changes=result.changes)
    assert result.params is not None and torch.equal(result.params, replay.params)
    assert result.evals == replay.evals  # the final evaluation too, by a survivor
    assert len(result.memories) == 2
    assert (tmp_path / "lastapply" / f"step-{20:010d}.ckpt").exists()
    assert (tmp_path / "lastapply" / "model.pt").exists()
