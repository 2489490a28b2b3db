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
JSON numbers that are not finite (``Infinity``, ``NaN``, ``1e309``), which no generator
makes, are put in place of generated numbers in request bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
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
from tests.service.fakes import FakeLauncher
from tests.specs import job_spec

# Generated requests per operation and generation mode (5 in the no-token world); about 75
# tests in all.
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


# JSON numbers that are not finite: Python's parser (and so the server's) reads each as an
# infinity or a NaN. Generated data never holds them (JSON has no such values), so each body
# below is a generated valid one with one of its numbers, chosen by Hypothesis, replaced.
NON_FINITE = ("Infinity", "-Infinity", "NaN", "1e309", "-1e309")
_MARK = "__non_finite_number__"


def _number_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of every number (not boolean) in a JSON value."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _number_paths(item, (*path, key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _number_paths(item, (*path, i))]
    return [path] if isinstance(value, int | float) and not isinstance(value, bool) else []


def _with_literal(body: Any, path: tuple[str | int, ...], literal: str) -> bytes:
    """``body`` as JSON text with the number at ``path`` written as ``literal``."""
    copy = json.loads(json.dumps(body))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = _MARK
    text = json.dumps(copy)
    assert text.count(f'"{_MARK}"') == 1
    return text.replace(f'"{_MARK}"', literal).encode()


def _names(loc: list[str | int], path: tuple[str | int, ...]) -> bool:
    """Whether an error's ``loc`` names the field at ``path`` (a union adds its tag to a
    path: ``schedule.constant.lr`` for ``schedule.lr``)."""
    rest = iter(loc)
    return all(any(part == key for part in rest) for key in path)


def _encloses(loc: list[str | int], path: tuple[str | int, ...]) -> bool:
    """Whether an error's ``loc`` names the field at ``path`` or an object holding it."""
    return _names(loc, path) or (0 < len(loc) < len(path) and tuple(loc) == path[: len(loc)])


BODY_OPERATIONS = [
    pytest.param(m, p, id=f"{m.upper()} {p}")
    for m, p, operation in _operations()
    if "application/json" in operation.get("requestBody", {}).get("content", {})
]


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_non_finite_numbers_are_refused_by_name(app: FastAPI, method: str, path: str) -> None:
    """Each answer is a documented 422 whose errors name the field, in a body that is JSON
    (an echoed infinity would not be), never a server error."""
    schema = _load(app)
    job_id = _finished_job(app, schema)
    fixed = {"job_id": job_id} if JOB_ID in path else None
    operation = schema[path][method]
    hits: list[bool] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(
        case=operation.as_strategy(
            generation_mode=GenerationMode.POSITIVE, path_parameters=fixed
        ).filter(lambda case: _number_paths(case.body)),
        choice=st.data(),
    )
    def check(case: schemathesis.Case, choice: st.DataObject) -> None:
        where = choice.draw(st.sampled_from(_number_paths(case.body)), label="field")
        literal = choice.draw(st.sampled_from(NON_FINITE), label="literal")
        # The generated body may already be refused at that field or an object holding it
        # (an integer written 1.0, a model without its kind); the literal must be named
        # wherever the field was reachable.
        before = case.call()
        errors = (before.json().get("errors") or []) if before.status_code == 422 else []
        reachable = not any(_encloses(error["loc"], where) for error in errors)
        case.body = _with_literal(case.body, where, literal)
        response = case.call_and_validate(checks=CHECKS)
        assert response.status_code == 422, response.text
        problem = json.loads(response.text, parse_constant=lambda c: pytest.fail(c))
        named = any(_names(error["loc"], where) for error in problem["errors"])
        assert named or not reachable, problem
        hits.append(reachable)

    check()
    assert sum(hits) >= len(hits) // 4, f"only {sum(hits)} of {len(hits)} fields were reachable"
