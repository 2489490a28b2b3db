"""Property-based API tests: schemathesis generates requests from the app's own OpenAPI.

Every operation gets a bounded, deterministic set of generated requests, valid ones and (when
it takes inputs) invalid ones, sent through schemathesis's ASGI transport to the app with its
lifespan running, a real SQLite file and the fake launcher. Each response must not be a
server error and must conform to the schema: a documented status code, a documented content
type, and a body that matches the documented response schema.

Three worlds: an empty store, where every generated job id is unknown (``/events`` then
answers 404 at once); a store holding one finished job whose id every ``/v1/jobs/{job_id}...``
request names, so the success bodies (the job, its metrics, its event stream, which ends at
once because the job has ended, its log and checkpoints) are generated and checked too; and
a server with API tokens on, sent no token, where every route but health must document its
401. Values random generation rarely hits (integer and event-id bounds) are explicit cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sparsetrain.service.app import create_app
from sparsetrain.service.deps import AppState
from sparsetrain.service.settings import Settings
from sparsetrain.status import JobStatus
from tests.service.conftest import job_spec
from tests.service.fakes import FakeLauncher

# Generated requests per operation and generation mode (5 in the no-token world). About 60
# tests in all; the module takes about 16 s on two cores.
MAX_EXAMPLES = 30
SEED = 20240611
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"deterministic": True, "database": "none"},
        # Bounds for an event stream that would not end (no generated request opens one).
        "max-stream-events": 20,
        "request-timeout": 10,
    }
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
JOB_ID = "{job_id}"


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """``(method, path, operation)`` of every operation in the OpenAPI document.

    The document is built without starting the app (``create_app`` does no work until its
    lifespan runs).
    """
    document = create_app(Settings(), launcher=FakeLauncher()).openapi()
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _constrained(schema: Any) -> bool:
    """Whether a JSON Schema restricts a string beyond its type (length, pattern, values)."""
    if isinstance(schema, dict):
        keys = {"maxLength", "minLength", "pattern", "enum", "const", "format"}
        return bool(keys & schema.keys()) or any(_constrained(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_constrained(v) for v in schema)
    return False


def _cases(*, known_job: bool) -> list[Any]:
    """One ``(method, path, mode)`` per operation and generation mode that applies to it.

    Negative (invalid) requests need an input that can be broken: a body, a path or query
    parameter (other than a fixed job id), or a header with a constraint (any string is a
    valid value of an unconstrained header). With ``known_job``, only the ``/v1/jobs``
    operations, whose answers depend on it.
    """
    params = []
    for method, path, operation in _operations():
        if known_job and not path.startswith("/v1/jobs"):
            continue
        inputs = [
            p
            for p in operation.get("parameters", [])
            if not (known_job and p["name"] == "job_id")
            and (p["in"] != "header" or _constrained(p["schema"]))
        ]
        modes = [GenerationMode.POSITIVE]
        if inputs or operation.get("requestBody"):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            label = f"{method.upper()} {path} {mode.value}"
            params.append(pytest.param(method, path, mode, id=label))
    return params


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(
        Settings(data_dir=tmp_path / "data", monitor_interval_s=60.0), launcher=FakeLauncher()
    )
    try:
        yield application
    finally:
        asgi.shutdown_lifespans()  # the lifespan that loading the schema started


def _load(app: FastAPI) -> schemathesis.BaseSchema:
    """The schema, fetched from the app; the first request starts the app's lifespan."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    assert isinstance(getattr(app.state, "sparsetrain", None), AppState), "lifespan not running"
    return schema


def _finished_job(app: FastAPI, schema: schemathesis.BaseSchema) -> str:
    """Submit a job through the API and run the monitor until it has succeeded."""
    submit = schema["/v1/jobs"]["post"].Case(body=job_spec(), media_type="application/json")
    response = submit.call()
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    state: AppState = app.state.sparsetrain
    for _ in range(10):
        state.monitor.tick()
    job = schema["/v1/jobs/{job_id}"]["get"].Case(path_parameters={"job_id": job_id}).call()
    assert job.json()["status"] == JobStatus.SUCCEEDED.value
    return job_id


def _check_operation(
    operation: Any,
    mode: GenerationMode,
    path_parameters: dict[str, Any] | None,
    max_examples: int = MAX_EXAMPLES,
) -> None:
    """Send ``max_examples`` generated requests (fixed seed) and validate every response."""

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()


@pytest.mark.parametrize(("method", "path", "mode"), _cases(known_job=False))
def test_operation_conforms_to_the_schema(
    app: FastAPI, method: str, path: str, mode: GenerationMode
) -> None:
    schema = _load(app)
    _check_operation(schema[path][method], mode, None)


@pytest.mark.parametrize(
    ("method", "path"),
    [pytest.param(m, p, id=f"{m.upper()} {p}") for m, p, _ in _operations()],
)
def test_operation_without_a_token_conforms_to_the_schema(
    tmp_path: Path, method: str, path: str
) -> None:
    """With API tokens on, requests without one get a documented 401 (health routes: 200)."""
    settings_ = Settings(
        data_dir=tmp_path / "data", monitor_interval_s=60.0, api_tokens="alice:s3cret"
    )
    secured = create_app(settings_, launcher=FakeLauncher())
    try:
        schema = _load(secured)
        _check_operation(schema[path][method], GenerationMode.POSITIVE, None, max_examples=5)
    finally:
        asgi.shutdown_lifespans()


@pytest.mark.parametrize(("method", "path", "mode"), _cases(known_job=True))
def test_operation_on_a_finished_job_conforms_to_the_schema(
    app: FastAPI, method: str, path: str, mode: GenerationMode
) -> None:
    schema = _load(app)
    job_id = _finished_job(app, schema)
    fixed = {"job_id": job_id} if JOB_ID in path else None
    _check_operation(schema[path][method], mode, fixed)


MAX_INT64 = 2**63 - 1
# Requests random generation rarely makes: integers past what SQLite stores, and event ids
# that are digits to ``str.isdigit`` but not to ``int``. Each answered 500 before the fix.
BOUNDARY_CASES = [
    pytest.param("get", "/v1/jobs", {"query": {"offset": MAX_INT64}}, 200, id="offset=max"),
    pytest.param("get", "/v1/jobs", {"query": {"offset": MAX_INT64 + 1}}, 422, id="offset>max"),
    pytest.param(
        "get", "/v1/jobs/{job_id}/metrics", {"query": {"since": MAX_INT64}}, 200, id="since=max"
    ),
    pytest.param(
        "get", "/v1/jobs/{job_id}/metrics", {"query": {"since": 10**20}}, 422, id="since>max"
    ),
    pytest.param(
        "get", "/v1/jobs/{job_id}/events", {"headers": {"Last-Event-ID": "\u00b2"}}, 200, id="sup2"
    ),
    pytest.param(
        "get",
        "/v1/jobs/{job_id}/events",
        {"headers": {"Last-Event-ID": "9" * 30}},
        200,
        id="event-id>max",
    ),
]


@pytest.mark.parametrize(("method", "path", "parts", "status"), BOUNDARY_CASES)
def test_boundary_values_are_answered_as_documented(
    app: FastAPI, method: str, path: str, parts: dict[str, Any], status: int
) -> None:
    schema = _load(app)
    job_id = _finished_job(app, schema)
    fixed = {"job_id": job_id} if JOB_ID in path else None
    case = schema[path][method].Case(path_parameters=fixed, **parts)
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == status, response.text
