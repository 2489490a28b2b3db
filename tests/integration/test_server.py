"""The real control plane: a uvicorn process on a real port, a real SQLite file, and the
session's local Ray cluster. Includes killing the server with SIGKILL mid-job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import torch

from sparsetrain.workers.runtime.names import supervisor_name
from tests.server_process import Server, serving, wait_for_job
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
DEADLINE_S = 120.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serving(tmp_path / "data")


SERVER_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 400, "d": 20},
    "compression": {"kind": "topk", "ratio": 0.1},
    "workers": {"count": 2},
    "batch_size": 4,
    "eval": {"every": 50},
}


def _spec(steps: int, **overrides: Any) -> dict[str, Any]:
    return job_spec(SERVER_JOB, steps=steps, **overrides)


def _wait(url: str, job_id: str, until: Any) -> dict[str, Any]:
    return wait_for_job(url, job_id, until)


def test_submit_runs_to_success_with_metrics(server: Server) -> None:
    created = httpx.post(f"{server.url}/v1/jobs", json=_spec(60), timeout=10)
    assert created.status_code == 201
    job_id = created.json()["id"]
    job = _wait(server.url, job_id, lambda j: j["status"] == "SUCCEEDED")
    assert job["step"] == 60 and job["result"]["final"]["train_loss"] < 0.6932
    metrics = httpx.get(f"{server.url}/v1/jobs/{job_id}/metrics", timeout=10).json()
    assert [m["step"] for m in metrics["steps"]] == list(range(60))
    events = httpx.get(f"{server.url}/v1/jobs/{job_id}/events", timeout=30).text
    statuses = [
        block.split('"status":"', 1)[1].split('"', 1)[0]
        for block in events.split("\n\n")
        if block.startswith("id: ") and "event: status" in block
    ]
    assert statuses == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
    assert events.rstrip().split("\n\n")[-1].startswith("event: end")
    model = httpx.get(f"{server.url}/v1/jobs/{job_id}/model", timeout=10)
    assert model.status_code == 200 and len(model.content) > 100
    checkpoints = httpx.get(f"{server.url}/v1/jobs/{job_id}/checkpoints", timeout=10).json()
    assert [c["step"] for c in checkpoints] == [60]
    storage = server.log_path.parent / "checkpoints"
    [folder] = {path.parent for path in storage.rglob("model.pt") if job_id in str(path)}
    assert httpx.delete(f"{server.url}/v1/jobs/{job_id}", timeout=10).status_code == 204
    assert not folder.exists()  # the checkpoint and the model went with the job


def test_cancel_a_running_job(server: Server) -> None:
    job_id = httpx.post(f"{server.url}/v1/jobs", json=_spec(100_000), timeout=10).json()["id"]
    _wait(server.url, job_id, lambda j: j["status"] == "RUNNING")
    cancelled = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert supervisor_name(job_id) not in names


def test_a_job_outlives_a_killed_server(tmp_path: Path) -> None:
    """SIGKILL the server mid-job, start it again: the job finishes, no metric is lost."""
    first = Server(tmp_path / "data")
    first.start()
    try:
        job_id = httpx.post(f"{first.url}/v1/jobs", json=_spec(1500), timeout=10).json()["id"]
        _wait(first.url, job_id, lambda j: j["status"] == "RUNNING" and j["step"] > 0)
    finally:
        first.kill()
    second = Server(tmp_path / "data")
    second.start()
    try:
        job = _wait(second.url, job_id, lambda j: j["status"] == "SUCCEEDED")
        assert job["step"] == 1500
        steps = httpx.get(
            f"{second.url}/v1/jobs/{job_id}/metrics", params={"max_points": 100_000}, timeout=30
        ).json()["steps"]
        assert [m["step"] for m in steps] == list(range(1500))
    finally:
        second.stop()


def test_tokens_on_a_real_server(tmp_path: Path) -> None:
    secured = Server(tmp_path / "data", SPARSETRAIN_API_TOKENS="alice:s3cret")
    secured.start()
    try:
        assert httpx.get(f"{secured.url}/v1/jobs", timeout=10).status_code == 401
        ok = httpx.get(
            f"{secured.url}/v1/jobs", headers={"Authorization": "Bearer s3cret"}, timeout=10
        )
        assert ok.status_code == 200
    finally:
        secured.stop()


def test_cli_submit_follow_and_plot_a_real_job(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparsetrain.cli import main

    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(_spec(120)))
    assert main(["--url", server.url, "submit", str(spec), "--follow"]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert "120/120" in captured.err and "SUCCEEDED" in captured.err
    plot = tmp_path / "curves.png"
    assert main(["--url", server.url, "metrics", job_id, "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 5_000


def test_a_sampling_job_serves_its_samples(server: Server, tmp_path: Path) -> None:
    from sparsetrain.client import Client

    spec = _spec(
        40,
        model={"kind": "linear_regression", "noise_std": 0.5, "l2": 0.05},
        objective="sample",
        sampler={"kind": "sgld", "burn_in": 10, "thinning": 5},
        schedule={"kind": "constant", "lr": 2e-4},
    )
    job_id = httpx.post(f"{server.url}/v1/jobs", json=spec, timeout=10).json()["id"]
    job = _wait(server.url, job_id, lambda j: j["status"] == "SUCCEEDED")
    assert job["result"]["final"]["posterior_samples"] == 6
    with Client(server.url) as client:
        assert {s["kind"] for s in client.samplers()} == {"sgld", "sgldfp"}
        path = client.download_samples(job_id, tmp_path)
    samples = torch.load(path, weights_only=True)
    assert path.name == f"{job_id}-samples.pt" and tuple(samples.shape) == (6, 20)
    plain = httpx.post(f"{server.url}/v1/jobs", json=_spec(5), timeout=10).json()["id"]
    _wait(server.url, plain, lambda j: j["status"] == "SUCCEEDED")
    assert httpx.get(f"{server.url}/v1/jobs/{plain}/samples", timeout=10).status_code == 404
