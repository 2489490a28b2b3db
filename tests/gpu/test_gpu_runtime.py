"""The runtime on a CUDA device: two worker actors sharing one GPU (``workers.gpus: 0.5``).

Skipped without CUDA (CI has none); run on a GPU machine with
``pytest -m gpu tests/gpu``. The replicas, gradients, memories and compression live on the
GPU and the updates cross the object store through pinned host buffers.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch

from sparsetrain.spec import ExchangeSpec, JobSpec, RandKSpec, TopKSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import build_compressor, encode
from sparsetrain.workers.runtime.launch import run_job
from sparsetrain.workers.runtime.staging import HostStaging
from tests.specs import job_spec_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


GPU_JOB: dict[str, Any] = {
    "model": {"kind": "mlp", "hidden": [256]},
    "data": {"kind": "sklearn", "name": "digits"},
    "compression": {"kind": "topk", "ratio": 0.05},
    "workers": {"count": 2, "gpus": 0.5},
    "batch_size": 32,
    "steps": 60,
    "eval": {"every": 30},
    "seed": 3,
}
_spec = partial(job_spec_model, GPU_JOB)


@pytest.mark.parametrize(
    "spec",
    [
        TopKSpec(ratio=0.01),
        TopKSpec(ratio=0.01, value_dtype="bfloat16"),
        RandKSpec(ratio=0.01, shared_seed=True),
    ],
)
def test_pinned_staging_round_trips_cuda_updates(spec: Any) -> None:
    d = 1_000_000
    x = torch.randn(d, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    payload = build_compressor(spec, d, 0).compress(
        x, step=0, generator=torch.Generator("cuda").manual_seed(1)
    )
    staging = HostStaging("cuda")
    sent = staging.send(payload)
    assert staging._outgoing.is_pinned()
    assert sent.tobytes() == encode(payload.to("cpu"))
    (received,) = staging.receive([np.array(sent)])
    assert staging._incoming.is_pinned()
    assert received.to_dense().is_cuda
    assert torch.equal(received.to_dense(), payload.to_dense())


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("transport", ["allgather", "reduce"])
def test_two_gpu_workers_on_one_gpu_match_the_cuda_simulator(transport: str) -> None:
    """Bit-identical replicas every step; the same trajectory as W logical workers on the
    same GPU in one process."""
    assert ray.cluster_resources().get("GPU", 0) >= 1
    spec = _spec(exchange={"transport": transport})
    distributed = run_job(spec, verify_replicas=True, timeout_s=300)
    local = simulate(spec, device="cuda")
    assert distributed.params is not None and local.params is not None
    torch.testing.assert_close(distributed.params, local.params.cpu(), atol=1e-5, rtol=0)
    ours, theirs = [m.loss for m in distributed.steps], [m.loss for m in local.steps]
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert [m.bytes_per_worker for m in distributed.steps] == [
        m.bytes_per_worker for m in local.steps
    ]
    assert distributed.final.train_loss < 0.7 * distributed.evals[0].train_loss


@pytest.mark.usefixtures("ray_cluster")
def test_async_mode_on_the_gpu_converges() -> None:
    spec = _spec(exchange={"mode": "async", "max_staleness": 1})
    result = run_job(spec, timeout_s=300)
    sync = simulate(spec.model_copy(update={"exchange": ExchangeSpec()}), device="cuda")
    assert max(result.staleness) <= 1
    assert result.final.train_loss < 0.8 * result.evals[0].train_loss
    assert abs(result.final.train_loss - sync.final.train_loss) < 0.1 * sync.final.train_loss


@pytest.mark.usefixtures("ray_cluster")
def test_gpu_checkpoint_resume_follows_the_same_trajectory(tmp_path: Path) -> None:
    """The GPU state (memory, momentum, CUDA generators) checkpoints and resumes exactly."""
    spec = _spec(
        steps=30,
        checkpoint={"every": 10},
        compression={"kind": "randk", "ratio": 0.01},
        optimizer={"kind": "sgd", "momentum": 0.9},
    )
    full = run_job(spec, "gpufull", storage=str(tmp_path), timeout_s=300)
    resumed_spec = spec.model_copy(
        update={"resume_from": str(tmp_path / "gpufull" / f"step-{20:010d}.ckpt")}
    )
    resumed = run_job(resumed_spec, "gpuresumed", storage=str(tmp_path), timeout_s=300)
    assert resumed.params is not None and full.params is not None
    assert torch.equal(resumed.params, full.params)
    assert [m.loss for m in resumed.steps] == [m.loss for m in full.steps[20:]]


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize(
    "compression",
    [
        {"kind": "qsgd", "levels": 4},
        {"kind": "sign"},
        {"kind": "powersgd", "rank": 2},
        {"kind": "randk", "ratio": 0.05, "shared_seed": True},
    ],
    ids=lambda c: c["kind"],
)
def test_every_wire_kind_keeps_gpu_replicas_identical(compression: dict[str, Any]) -> None:
    """Quantized and low-rank updates take the plain encode path, shared-seed rand-k the
    staged one; each keeps the replicas bit-identical and follows the CUDA simulator."""
    spec = _spec(compression=compression, steps=20, eval={"every": 0})
    distributed = run_job(spec, verify_replicas=True, timeout_s=300)
    local = simulate(spec, device="cuda")
    assert distributed.params is not None and local.params is not None
    torch.testing.assert_close(distributed.params, local.params.cpu(), atol=1e-5, rtol=0)


@pytest.mark.usefixtures("ray_cluster")
def test_sgld_sampling_job_on_the_gpu(tmp_path: Path) -> None:
    """The Langevin noise (drawn on the CPU from a (seed, step) key) reaches both GPU
    replicas identically; the samples equal the CUDA simulator's."""
    spec = JobSpec.model_validate(
        {
            "model": {"kind": "linear_regression", "noise_std": 0.5, "l2": 0.05},
            "data": {"kind": "synthetic", "n": 400, "d": 8, "test_fraction": 0.2},
            "objective": "sample",
            "sampler": {"kind": "sgld", "burn_in": 4, "thinning": 3},
            "compression": {"kind": "topk", "ratio": 0.5},
            "workers": {"count": 2, "gpus": 0.5},
            "batch_size": 8,
            "steps": 25,
            "schedule": {"kind": "constant", "lr": 2e-4},
            "eval": {"every": 10},
            "seed": 2,
            "checkpoint": {"path": str(tmp_path)},
        }
    )
    distributed = run_job(spec, verify_replicas=True, timeout_s=300)
    local = simulate(spec, device="cuda")
    assert local.samples is not None and local.samples.shape[0] == 7
    samples = torch.load(tmp_path / "samples.pt", weights_only=True)
    torch.testing.assert_close(samples, local.samples.cpu(), atol=1e-5, rtol=0)
    assert distributed.final.posterior_samples == 7
