"""What the OpenAPI document says about errors: every error is ``application/problem+json``.

The routers declare the error statuses each operation can answer with ``problems(...)``
(``responses=problems(404, 409)``); ``install(app)`` makes the generated document list those
bodies under ``application/problem+json``, the media type ``problems.problem`` sends, instead
of the ``application/json`` FastAPI assumes for a response model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from sparsetrain.jobs import Problem
from sparsetrain.service.problems import PROBLEM_JSON

DESCRIPTIONS: dict[int, str] = {
    400: "The body could not be read (for example, it is not UTF-8).",
    401: "No or an unknown bearer token (only when the server has API tokens configured).",
    403: "This principal may not read this (only when the server has API tokens configured).",
    404: "No such job (or it belongs to another principal), or it has nothing of this kind.",
    409: "The job's state does not allow this, or the Idempotency-Key was used for another spec.",
    422: "The path, query, headers or body are malformed, or the job spec is invalid.",
    503: "The database or the Ray cluster is unreachable.",
}

# One event of ``GET /v1/jobs/{job_id}/events`` (an ``itemSchema``, as FastAPI's own SSE
# routes document theirs): job events carry their ``seq`` as the id, ``metrics`` and the
# final ``end`` have none; ``data`` is always a JSON document.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"enum": ["status", "checkpoint", "log", "metrics", "end"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for error ``statuses``: a ``Problem`` body as problem+json.

    Raises ``KeyError`` for a status without a description in ``DESCRIPTIONS``.
    """
    return {
        status: {
            "model": Problem,
            "description": DESCRIPTIONS[status],
            # A marker that ``install`` turns into the model's schema under this media type.
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


def problem_media_types(document: dict[str, Any]) -> dict[str, Any]:
    """Move each problem response's schema from ``application/json`` to problem+json.

    FastAPI files a response ``model`` under the route's media type (JSON); a response that
    also names problem+json (see ``problems``) is sent only as problem+json. Edits in place.
    """
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON] = {
                        **content.pop("application/json"),
                        **content[PROBLEM_JSON],
                    }
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) document problem+json error bodies."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_media_types(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
