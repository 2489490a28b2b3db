"""User code on a server: ``custom`` data and ``code`` shipped with a job are refused unless
the operator allows user code, and shipped code is confined to the data roots like data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparsetrain.service.app import create_app
from sparsetrain.service.settings import Settings
from tests.service.fakes import FakeLauncher
from tests.specs import job_spec

pytestmark = pytest.mark.anyio
WHEEL = "shippedpkg-0.1-py3-none-any.whl"
CUSTOM_DATA = {"kind": "custom", "factory": "shippedpkg.data:make"}


@pytest.fixture
async def open_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server whose operator allows user code."""
    settings = Settings(data_dir=tmp_path / "open", monitor_interval_s=60.0, allow_custom_code=True)
    app = create_app(settings, launcher=FakeLauncher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"data": CUSTOM_DATA}, ["data", "kind"]),
        ({"code": {"path": WHEEL}}, ["code"]),
    ],
)
async def test_user_code_is_refused_unless_the_operator_allows_it(
    client: httpx.AsyncClient,
    open_client: httpx.AsyncClient,
    fields: dict[str, Any],
    loc: list[str],
) -> None:
    spec = job_spec(**fields)
    refused = await client.post("/v1/jobs", json=spec)
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["loc"] == loc and "SPARSETRAIN_ALLOW_CUSTOM_CODE" in error["msg"]
    accepted = await open_client.post("/v1/jobs", json=spec)
    assert accepted.status_code == 201, accepted.text


async def test_shipped_code_stays_inside_the_data_roots(open_client: httpx.AsyncClient) -> None:
    outside = job_spec(code={"path": f"../../elsewhere/{WHEEL}"}, data=CUSTOM_DATA)
    refused = await open_client.post("/v1/jobs", json=outside)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["code", "path"]
    inside = job_spec(code={"path": f"wheels/{WHEEL}"}, data=CUSTOM_DATA)
    accepted = await open_client.post("/v1/jobs", json=inside)
    assert accepted.status_code == 201
    assert accepted.json()["spec"]["code"] == {"path": f"wheels/{WHEEL}"}


async def test_a_code_path_that_is_not_a_wheel_or_folder_names_the_field(
    open_client: httpx.AsyncClient,
) -> None:
    response = await open_client.post("/v1/jobs", json=job_spec(code={"path": "pkg/run.py"}))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["code", "path"]
