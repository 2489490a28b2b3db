"""Strict numbers and the memory bound, through a real server process on the session's Ray
cluster: what a client sends is refused with a 422 naming the field, on a connection that
stays open, and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server_process import Server, serving, wait_for_job
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
LIMIT = "64MiB"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Iterator[Server]:
    yield from serving(
        tmp_path_factory.mktemp("limits") / "data", SPARSETRAIN_MAX_WORKER_MEMORY=LIMIT
    )


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """One keep-alive connection for every request of a test."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _strict_json(text: str) -> Any:
    """Parse ``text`` as JSON proper: ``Infinity`` and ``NaN`` are not JSON."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"the body holds the non-JSON number {constant}")

    return json.loads(text, parse_constant=refuse)


def _post_raw(http: httpx.Client, body: str) -> tuple[httpx.Response, dict[str, Any]]:
    """POST a job spec written by hand (the JSON encoder would refuse ``Infinity``)."""
    response = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert response.headers.get("connection", "") != "close"
    return response, _strict_json(response.text)


def _with(member: str) -> str:
    base = json.dumps(job_spec())
    return base[:-1] + ", " + member + "}"


NON_FINITE = [
    ('"schedule": {"kind": "constant", "lr": Infinity}', ["schedule", "constant", "lr"]),
    ('"compression": {"kind": "threshold", "threshold": 1e309}', ["compression", "threshold"]),
    ('"schedule": {"kind": "inverse_time", "gamma": -Infinity}', ["schedule", "inverse_time"]),
    ('"averaging": {"shift": NaN}', ["averaging", "shift"]),
]


def test_non_finite_numbers_are_refused_by_name(http: httpx.Client) -> None:
    before = http.get("/v1/jobs").json()["total"]
    for member, loc in NON_FINITE:
        response, problem = _post_raw(http, _with(member))
        assert response.status_code == 422, response.text
        locs = [error["loc"][: len(loc)] for error in problem["errors"]]
        assert loc in locs and "finite" in problem["detail"], problem
    body = json.dumps(job_spec()).replace(
        '"logistic_regression"', '"logistic_regression", "l2": 1e999'
    )
    response, problem = _post_raw(http, body)
    assert response.status_code == 422
    assert problem["errors"][0]["loc"] == ["model", "logistic_regression", "l2"]
    assert http.get("/v1/jobs").json()["total"] == before  # nothing stored, the connection open


@pytest.mark.parametrize("steps", ["true", '"100"', "100.0", "1e2"])
def test_values_of_another_type_are_not_converted(http: httpx.Client, steps: str) -> None:
    body = json.dumps(job_spec()).replace('"steps": 10', f'"steps": {steps}')
    response, problem = _post_raw(http, body)
    assert response.status_code == 422
    assert [error["loc"] for error in problem["errors"]] == [["steps"]]


def test_sizes_beyond_their_bounds_are_refused(http: httpx.Client) -> None:
    """An exact integer past the bound, and the same size as a JSON float (1e12)."""
    for n_features in (10**12, 1e12):
        data = {"kind": "libsvm", "path": "a.svm", "n_features": n_features}
        response = http.post("/v1/jobs", json=job_spec(data=data))
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["data", "libsvm", "n_features"]


def test_a_job_over_the_memory_limit_is_refused_with_the_numbers(
    server: Server, http: httpx.Client
) -> None:
    huge = job_spec(data={"kind": "synthetic", "n": 10_000_000, "d": 10_000_000})
    response = http.post("/v1/jobs", json=huge)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["data"]
    assert "about 727.6 TiB per worker (data 727.6 TiB" in problem["detail"]
    assert problem["detail"].endswith("this server allows 64 MiB (SPARSETRAIN_MAX_WORKER_MEMORY)")
    # 20,000 rows of 1,000 features (160 MB to build) are over 64 MiB too; 200 of 20 are not.
    over = http.post("/v1/jobs", json=job_spec(data={"kind": "synthetic", "n": 20_000, "d": 1000}))
    assert over.status_code == 422 and "this server allows 64 MiB" in over.json()["detail"]
    small = http.post("/v1/jobs", json=job_spec(steps=5))
    assert small.status_code == 201, small.text
    job = wait_for_job(server.url, small.json()["id"], lambda j: j["status"] == "SUCCEEDED")
    assert job["step"] == 5


def test_accumulation_and_precision_are_refused_by_name(http: httpx.Client) -> None:
    before = http.get("/v1/jobs").json()["total"]
    cases = [
        (job_spec(batch_size=32, accumulation_steps=3), ["accumulation_steps"], "divide"),
        (job_spec(precision="fp8"), ["precision"], "'fp32', 'bf16' or 'fp16'"),
    ]
    for body, loc, words in cases:
        response = http.post("/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert [error["loc"] for error in problem["errors"]] == [loc]
        assert words in problem["detail"]
    assert http.get("/v1/jobs").json()["total"] == before
