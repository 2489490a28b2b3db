"""Request size limits, who may read /metrics, and the public API document (fake launcher)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sparsetrain.service.app import create_app
from sparsetrain.service.settings import Settings
from tests.service.fakes import FakeLauncher
from tests.specs import job_spec

pytestmark = pytest.mark.anyio
ALICE = {"Authorization": "Bearer a-secret"}
PROMETHEUS = {"Authorization": "Bearer p-secret"}


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Tokens on, ``prometheus`` may read /metrics, 4 KiB bodies and 2 KiB headers."""
    settings = Settings(
        data_dir=tmp_path / "data",
        monitor_interval_s=60.0,
        api_tokens="alice:a-secret,prometheus:p-secret",
        metrics_principals="prometheus",
        max_body_bytes=4096,
        max_header_bytes=2048,
    )
    app: FastAPI = create_app(settings, launcher=FakeLauncher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_a_body_over_the_limit_is_refused(guarded: httpx.AsyncClient) -> None:
    spec = job_spec(name="x")
    small = await guarded.post("/v1/jobs", json=spec, headers=ALICE)
    assert small.status_code == 201
    padded = json.dumps(spec | {"name": "x" * 5000}).encode()
    large = await guarded.post("/v1/jobs", content=padded, headers=ALICE)
    assert large.status_code == 413
    assert large.headers["content-type"] == "application/problem+json"
    assert large.json()["status"] == 413


async def test_a_streamed_body_without_a_length_is_counted(guarded: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    streamed = await guarded.post("/v1/jobs", content=chunks(), headers=ALICE)
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413


async def test_headers_over_the_limit_are_refused(guarded: httpx.AsyncClient) -> None:
    fine = await guarded.get("/v1/jobs", headers=ALICE | {"X-Pad": "x" * 1000})
    assert fine.status_code == 200
    large = await guarded.get("/v1/jobs", headers=ALICE | {"X-Pad": "x" * 3000})
    assert large.status_code == 431 and large.json()["status"] == 431


async def test_metrics_only_for_the_metrics_principals(guarded: httpx.AsyncClient) -> None:
    await guarded.post("/v1/jobs", json=job_spec(), headers=ALICE)
    assert (await guarded.get("/metrics")).status_code == 401
    tenant = await guarded.get("/metrics", headers=ALICE)
    assert tenant.status_code == 403 and "sparsetrain_jobs" not in tenant.text
    scraper = await guarded.get("/metrics", headers=PROMETHEUS)
    assert scraper.status_code == 200 and 'sparsetrain_jobs{status="PENDING"} 1' in scraper.text


async def test_the_api_document_is_public_and_names_no_server_path(
    guarded: httpx.AsyncClient, tmp_path: Path
) -> None:
    document = await guarded.get("/openapi.json")
    assert document.status_code == 200 and "/v1/jobs" in document.json()["paths"]
    assert (await guarded.get("/docs")).status_code == 200
    assert str(tmp_path) not in document.text


async def test_the_api_document_can_be_switched_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, monitor_interval_s=60.0, public_docs=False)
    app: FastAPI = create_app(settings, launcher=FakeLauncher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/openapi.json")).status_code == 404
            assert (await client.get("/docs")).status_code == 404
            assert (await client.get("/healthz")).status_code == 200
