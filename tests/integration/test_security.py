"""Tenant confinement, path leaks and request limits, through the real server process (a real
port, a real SQLite file, the session's Ray cluster) with API tokens on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import DEADLINE_S, Server, serving
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
ALICE = {"Authorization": "Bearer a-secret"}
BOB = {"Authorization": "Bearer b-secret"}
PROMETHEUS = {"Authorization": "Bearer p-secret"}
RAY_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 200, "d": 10},
    "workers": {"count": 2},
    "batch_size": 4,
    "steps": 20,
    "checkpoint": {"every": 10, "keep": 5},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Iterator[Server]:
    yield from serving(
        tmp_path_factory.mktemp("security") / "data",
        SPARSETRAIN_API_TOKENS="alice:a-secret,bob:b-secret,prometheus:p-secret",
        SPARSETRAIN_METRICS_PRINCIPALS="prometheus",
    )


@pytest.fixture(scope="module")
def alice_job(server: Server) -> str:
    """A job of alice's that ran to the end, with checkpoints at steps 10 and 20."""
    created = httpx.post(f"{server.url}/v1/jobs", json=job_spec(RAY_JOB), headers=ALICE)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    _wait(server, job_id, ALICE, "SUCCEEDED")
    return job_id


def _wait(server: Server, job_id: str, headers: dict[str, str], status: str) -> dict[str, Any]:
    """Poll until the job is ``status`` (bounded); fails on another terminal status."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(
            f"{server.url}/v1/jobs/{job_id}", headers=headers, timeout=10
        ).json()
        if job["status"] == status:
            return job
        assert job["status"] not in ("SUCCEEDED", "FAILED", "CANCELLED"), job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never became {status}")


def _submit(server: Server, headers: dict[str, str], **overrides: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/jobs", json=job_spec(RAY_JOB, **overrides), headers=headers, timeout=10
    )


def _storage(server: Server) -> Path:
    return Path(server.env["SPARSETRAIN_STORAGE"])


def test_a_chained_url_cannot_leave_the_storage(server: Server) -> None:
    storage = _storage(server)
    escape = f"{storage}/../../escape::memory://x"
    written = _submit(server, ALICE, checkpoint={"path": escape, "every": 20, "keep": 1})
    assert written.status_code == 422, written.text
    assert written.json()["errors"][0]["loc"] == ["checkpoint", "path"]
    read = _submit(server, ALICE, resume_from=escape)
    assert read.status_code == 422 and read.json()["errors"][0]["loc"] == ["resume_from"]
    for response in (written, read):
        assert str(storage) not in response.text and str(storage.parent) not in response.text
    assert not (storage.parent.parent / "escape").exists()


def test_each_principal_has_its_own_namespace(server: Server, alice_job: str) -> None:
    storage = _storage(server)
    folder = storage / "alice" / alice_job
    assert {p.name for p in folder.iterdir()} >= {
        "step-0000000010.ckpt",
        "step-0000000020.ckpt",
        "model.pt",
    }
    # bob names alice's folder, in the old layout and the new, to write or to resume from
    for path in (storage / alice_job, folder, f"../alice/{alice_job}"):
        written = _submit(server, BOB, checkpoint={"path": str(path), "every": 10, "keep": 1})
        assert written.status_code == 422, (path, written.text)
        read = _submit(server, BOB, resume_from=str(path))
        assert read.status_code == 422, (path, read.text)
        assert str(storage) not in written.text + read.text
    # alice resumes from her own job by its id, relative to her namespace
    resumed = _submit(server, ALICE, resume_from=f"{alice_job}/step-0000000010.ckpt")
    assert resumed.status_code == 201, resumed.text
    job_id = resumed.json()["id"]
    _wait(server, job_id, ALICE, "SUCCEEDED")
    page = httpx.get(f"{server.url}/v1/jobs/{job_id}/metrics", headers=ALICE, timeout=10).json()
    assert [m["step"] for m in page["steps"]] == list(range(10, 20))
    assert (storage / "alice" / job_id / "step-0000000020.ckpt").exists()


def test_clients_see_no_server_paths(server: Server, alice_job: str) -> None:
    data_dir = server.env["SPARSETRAIN_DATA_DIR"]
    url = f"{server.url}/v1/jobs/{alice_job}"
    checkpoints = httpx.get(f"{url}/checkpoints", headers=ALICE, timeout=10).json()
    assert [c["path"] for c in checkpoints] == [
        f"{alice_job}/step-0000000010.ckpt",
        f"{alice_job}/step-0000000020.ckpt",
    ]
    log = httpx.get(f"{url}/logs", headers=ALICE, timeout=10).text
    assert f"checkpoint at step 10: {alice_job}/step-0000000010.ckpt" in log
    assert data_dir not in log
    outside = _submit(server, ALICE, data={"kind": "libsvm", "path": "../../etc/passwd"})
    assert outside.status_code == 422 and data_dir not in outside.text
    missing = _submit(server, ALICE, data={"kind": "libsvm", "path": "missing.svm"})
    assert missing.status_code == 201 and missing.json()["spec"]["data"]["path"] == "missing.svm"
    failed = _wait(server, missing.json()["id"], ALICE, "FAILED")
    assert "missing.svm" in failed["error"] and data_dir not in str(failed)


def test_metrics_need_a_metrics_principal_and_the_docs_none(server: Server) -> None:
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=ALICE, timeout=10).status_code == 403
    scraped = httpx.get(f"{server.url}/metrics", headers=PROMETHEUS, timeout=10)
    assert scraped.status_code == 200 and "sparsetrain_jobs" in scraped.text
    document = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert document.status_code == 200 and "/v1/jobs" in document.json()["paths"]
    assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200
    assert server.env["SPARSETRAIN_DATA_DIR"] not in document.text


def test_request_limits(server: Server) -> None:
    url = f"{server.url}/v1/jobs"
    body = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    assert httpx.post(url, content=body, headers=ALICE, timeout=30).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * (64 << 10)

    streamed = httpx.post(url, content=chunks(), headers=ALICE, timeout=30)
    assert "content-length" not in streamed.request.headers and streamed.status_code == 413
    large = httpx.get(url, headers=ALICE | {"X-Pad": "x" * (20 << 10)}, timeout=10)
    assert large.status_code == 431 and large.json()["status"] == 431
    try:  # the HTTP parser stops reading a huge head: 400, or the connection closes early
        huge = httpx.get(url, headers=ALICE | {"X-Pad": "x" * (1 << 20)}, timeout=30)
        assert huge.status_code == 400
    except httpx.TransportError:
        pass
    assert httpx.get(url, headers=ALICE, timeout=10).status_code == 200
