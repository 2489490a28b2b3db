"""Sampling jobs on a real local Ray cluster, against the single-process simulator."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.training.simulator import simulate_async
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]


SAMPLING_JOB: dict[str, Any] = {
    "model": {"kind": "linear_regression", "noise_std": 0.5, "l2": 0.05},
    "data": {"kind": "synthetic", "n": 400, "d": 8, "test_fraction": 0.2},
    "objective": "sample",
    "sampler": {"kind": "sgld", "burn_in": 4, "thinning": 3},
    "compression": {"kind": "topk", "ratio": 0.5},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 25,
    "schedule": {"kind": "constant", "lr": 2e-4},
    "eval": {"every": 10},
    "seed": 2,
}
_spec = partial(job_spec_model, SAMPLING_JOB)


def _samples(root: Path) -> torch.Tensor:
    samples = torch.load(root / "samples.pt", weights_only=True)
    assert isinstance(samples, torch.Tensor)
    return samples


def test_sync_sgld_matches_the_simulator_bit_for_bit(tmp_path: Path) -> None:
    """Every replica adds the same noise once per step: the digests agree after every step
    (``verify_replicas``), and parameters, samples and evaluations equal the simulator's."""
    spec = _spec(checkpoint={"path": str(tmp_path)})
    distributed = run_job(spec, verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    assert distributed.params is not None and local.params is not None
    assert torch.equal(distributed.params, local.params)
    assert local.samples is not None and local.samples.shape[0] == 7
    assert torch.equal(_samples(tmp_path), local.samples)
    assert distributed.evals == local.evals
    assert distributed.final.posterior_samples == 7


def test_sgldfp_resumed_from_a_checkpoint_keeps_every_sample(tmp_path: Path) -> None:
    sampler = {
        "kind": "sgldfp",
        "burn_in": 2,
        "thinning": 2,
        "fixed_point_steps": 6,
        "fixed_point_lr": 0.5,
    }
    first, second = tmp_path / "first", tmp_path / "second"
    spec = _spec(sampler=sampler, checkpoint={"path": str(first), "every": 10, "keep": 5})
    run_job(spec, timeout_s=120)
    resumed = spec.model_copy(
        update={
            "checkpoint": spec.checkpoint.model_copy(update={"path": str(second)}),
            "resume_from": str(first / "step-0000000010.ckpt"),
        }
    )
    run_job(resumed, verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    assert local.samples is not None and local.samples.shape[0] == 8
    assert torch.equal(_samples(second), local.samples)


def test_async_sgld_runs_with_bounded_staleness_like_the_simulator(tmp_path: Path) -> None:
    spec = _spec(
        workers={"count": 3},
        steps=15,
        exchange={"mode": "async", "max_staleness": 2},
        checkpoint={"path": str(tmp_path)},
    )
    distributed = run_job(spec, timeout_s=120)
    local = simulate_async(spec)
    assert sum(distributed.staleness.values()) == 15 * 3 and max(distributed.staleness) == 2
    assert distributed.staleness == local.staleness
    assert local.samples is not None and local.samples.shape[0] == 3
    assert distributed.params is not None and local.params is not None
    assert torch.equal(distributed.params, local.params)
    assert torch.equal(_samples(tmp_path), local.samples)
    assert distributed.final.posterior_samples == 3
