"""A submitted spec whose aggregation path does not fit its compressor or its transport, or
that the Ray runtime does not run, is a 422 naming ``exchange.aggregation``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.specs import job_spec

pytestmark = pytest.mark.anyio


async def test_gtopk_with_randk_is_refused(client: httpx.AsyncClient) -> None:
    spec = job_spec(compression={"kind": "randk", "k": 2}, exchange={"aggregation": "gtopk"})
    response = await client.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "exchange.aggregation" in response.text and "topk" in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize("transport", ["allgather", "reduce"])
async def test_a_forced_allreduce_off_the_collective_transport_is_refused(
    client: httpx.AsyncClient, transport: str
) -> None:
    """The object-store transports run only the allgather semantics: no silent other path."""
    spec = job_spec(
        compression={"kind": "randk", "k": 2, "shared_seed": True},
        exchange={"aggregation": "allreduce", "transport": transport},
    )
    response = await client.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    assert "exchange.aggregation" in response.text and "transport 'collective'" in response.text


@pytest.mark.parametrize(
    "compression",
    [
        {"kind": "none"},
        {"kind": "randk", "k": 2, "shared_seed": True},
        {"kind": "powersgd", "rank": 1},
    ],
)
async def test_a_forced_allreduce_on_the_collective_transport_is_accepted(
    client: httpx.AsyncClient, compression: dict[str, Any]
) -> None:
    spec = job_spec(
        compression=compression,
        exchange={"aggregation": "allreduce", "transport": "collective"},
    )
    response = await client.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["exchange"]["aggregation"] == "allreduce"


async def test_a_forced_gtopk_on_the_collective_transport_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    spec = job_spec(
        compression={"kind": "topk", "k": 2},
        exchange={"aggregation": "gtopk", "transport": "collective"},
    )
    response = await client.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["exchange"]["aggregation"] == "gtopk"


async def test_auto_on_the_collective_transport_is_accepted(client: httpx.AsyncClient) -> None:
    spec = job_spec(
        compression={"kind": "topk", "k": 2},
        workers={"count": 2, "max": 32},
        exchange={"aggregation": "auto", "transport": "collective"},
    )
    response = await client.post("/v1/jobs", json=spec)
    assert response.status_code == 201
    assert response.json()["spec"]["exchange"]["aggregation"] == "auto"
