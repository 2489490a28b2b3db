"""fp16 loss scaling on Ray: the replicas skip the same overflowing steps as the simulator,
stay bit-identical, and the job completes with one event per skipped step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.launch import run_job
from tests.workers.test_precision import large_feature_csv, overflowing_job

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]


def test_fp16_overflow_skips_the_same_steps_on_every_replica(tmp_path: Path) -> None:
    spec = overflowing_job(large_feature_csv(tmp_path / "big.csv"), steps=10)
    distributed = run_job(spec, verify_replicas=True, timeout_s=120)
    local = simulate(spec)
    skipped = [m.step for m in local.steps if m.skipped]
    assert skipped and len(skipped) < len(local.steps)
    assert [m.step for m in distributed.steps if m.skipped] == skipped
    assert [m.loss_scale for m in distributed.steps] == [m.loss_scale for m in local.steps]
    assert distributed.params is not None and local.params is not None
    assert torch.equal(distributed.params, local.params)
    events = [e for e in distributed.events if e["kind"] == "skip"]
    assert [e["data"]["step"] for e in events] == skipped
    assert all(e["data"]["ranks"] >= 1 for e in events)
    assert "not finite at loss scale 65536" in events[0]["message"]
