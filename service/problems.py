"""Every error a client sees, as ``application/problem+json``; never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparsetrain.errors import SpecError
from sparsetrain.jobs import FieldProblem, Problem
from sparsetrain.service.store import (
    IdempotencyConflict,
    IllegalTransition,
    JobEnded,
    JobNotFound,
    JobNotTerminal,
)

log = logging.getLogger("sparsetrain.service")
PROBLEM_JSON = "application/problem+json"


class AuthenticationError(Exception):
    """No or an unknown bearer token."""


def problem(
    status: int, title: str, detail: str | None = None, errors: list[FieldProblem] | None = None
) -> JSONResponse:
    """A problem+json response (a bearer challenge is added to 401s)."""
    body = Problem(title=title, status=status, detail=detail, errors=errors).model_dump(
        exclude_none=True
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc_part(part: object) -> str | int:
    """A field path element as JSON can carry it: a key or a list index, else its text."""
    return part if isinstance(part, str | int) and not isinstance(part, bool) else str(part)


def install(app: FastAPI) -> None:
    """Map every exception to a problem response, in one place."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        # Only each error's path and message are echoed, never the input: a value such as a
        # non-finite float has no JSON form and would break the response.
        errors = [
            FieldProblem(loc=[_loc_part(p) for p in item["loc"] if p != "body"], msg=item["msg"])
            for item in error.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(SpecError)
    async def bad_spec(_: Request, error: SpecError) -> JSONResponse:
        errors = [FieldProblem(loc=list(error.loc), msg=error.message)]
        return problem(422, "Invalid job spec", str(error), errors=errors)

    @app.exception_handler(JobNotFound)
    async def not_found(_: Request, error: JobNotFound) -> JSONResponse:
        return problem(404, "Not found", str(error))

    @app.exception_handler(IllegalTransition)
    @app.exception_handler(JobNotTerminal)
    @app.exception_handler(JobEnded)
    @app.exception_handler(IdempotencyConflict)
    async def conflict(_: Request, error: Exception) -> JSONResponse:
        return problem(409, "Conflict", str(error))

    @app.exception_handler(AuthenticationError)
    async def unauthorized(_: Request, error: AuthenticationError) -> JSONResponse:
        return problem(401, "AuthenticationError", str(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal server error", "the error was logged on the server")
