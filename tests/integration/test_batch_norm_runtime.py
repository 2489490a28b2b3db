"""Batch-norm statistics on a real local Ray cluster: each replica keeps its own while it
trains, and the group averages them before evaluations, checkpoints, joins and the end; the
run equals the simulator (parameters and buffers), a resumed run the uninterrupted one, the
exported model the reported evaluation, and a joiner holds everyone's buffers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.models.loading import load_model
from sparsetrain.workers.runtime.launch import run_job, start_job
from sparsetrain.workers.training.checkpoint import MAGIC, load_checkpoint
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.prepare import prepare
from tests.specs import job_spec_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0

BN_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 600, "d": 30, "test_fraction": 0.1},
    "model": {"kind": "mlp", "hidden": [16], "batch_norm": True, "dropout": 0.2},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 30,
    "eval": {"every": 10},
    "checkpoint": {"every": 10},
    "seed": 2,
}
_spec = partial(job_spec_model, BN_JOB)


def _same(ours: dict[str, torch.Tensor] | None, theirs: dict[str, torch.Tensor] | None) -> bool:
    assert ours is not None and theirs is not None and ours.keys() == theirs.keys()
    return all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_batch_norm_replicas_match_the_simulator_export_and_resume(tmp_path: Path) -> None:
    spec = _spec()
    full = run_job(spec, "bnfull", storage=str(tmp_path), verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    assert full.params is not None and local.params is not None
    assert torch.equal(full.params, local.params)
    assert _same(full.buffers, local.buffers)
    assert full.evals == local.evals

    # Every rank's snapshot held the same (averaged) buffers: stored once, marked shared.
    path = tmp_path / "bnfull" / "step-0000000020.ckpt"
    stored = torch.load(io.BytesIO(path.read_bytes()[len(MAGIC) + 40 :]), weights_only=True)
    assert stored["workers"][1]["buffers"] == "shared"
    first, second = load_checkpoint(str(path)).workers
    assert _same(first["buffers"], second["buffers"])

    # The exported module in eval mode is what the final evaluation measured.
    setup = prepare(spec)
    setup.model.flat.copy_(full.params)
    setup.model.load_buffer_state(full.buffers or {})
    assert evaluate_setup(setup, setup.total_steps) == full.final
    module = load_model(tmp_path / "bnfull" / "model.pt")
    x = setup.dataset.x_train
    assert isinstance(x, torch.Tensor)  # synthetic data is dense
    with torch.no_grad():
        assert torch.equal(module(x), setup.model.forward(x))

    resumed = run_job(
        spec.model_copy(update={"resume_from": str(tmp_path / "bnfull" / "step-0000000010.ckpt")}),
        "bnresumed",
        storage=str(tmp_path),
        timeout_s=120,
    )
    assert resumed.params is not None and torch.equal(resumed.params, full.params)
    assert _same(resumed.buffers, full.buffers)
    assert resumed.evals[-1] == full.final


def _wait(supervisor: Any, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        progress = ray.get(supervisor.progress.remote())
        if until(progress):
            return progress
        assert progress["state"] in ("created", "running", "resizing"), progress
        time.sleep(0.02)
    raise AssertionError("the job never reached the condition")


def test_a_joiner_holds_the_groups_batch_norm_statistics() -> None:
    """Scaled 2 -> 3 while running: ``verify_replicas`` compares every rank's digest after
    every step, buffers included once averaged (the joiner's from its first step), and the
    run equals its replay, buffers too."""
    spec = _spec(
        workers={"count": 2, "min": 1, "max": 3},
        steps=1500,
        eval={"every": 0},
        checkpoint={"every": 0},
    )
    supervisor = start_job(spec, storage=None, verify_replicas=True)
    try:
        _wait(supervisor, lambda p: p["step"] >= 10)
        ray.get(supervisor.scale.remote(3))
        _wait(supervisor, lambda p: p["workers"] == 3)
        progress = _wait(supervisor, lambda p: p["state"] not in ("created", "running", "resizing"))
        assert progress["state"] == "succeeded", progress
        final = ray.get(supervisor.result.remote())
        changes = [Change.from_dict(c) for c in ray.get(supervisor.membership.remote())]
    finally:
        ray.kill(supervisor)
    assert [c.kind for c in changes] == ["join"]
    replay = simulate(spec, changes=changes)
    assert replay.params is not None
    assert torch.equal(torch.from_numpy(final["params"].copy()), replay.params)
    assert _same(final["buffers"], replay.buffers)
