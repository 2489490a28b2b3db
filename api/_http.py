"""The wire level shared by ``Client`` and ``AsyncClient``: one request builder, one error
mapping, one retry policy and one SSE parser, so the two clients cannot drift apart.

Each ``*_call`` function says what one REST verb sends and which statuses mean success; the
clients only send ``Call`` objects and decode what comes back.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from sparsetrain._sse import ServerSentEvent, aparse_sse, parse_sse
from sparsetrain.errors import (
    ApiError,
    Conflict,
    FieldIssue,
    NotFound,
    ServerError,
    TransportError,
    Unauthorized,
    ValidationFailed,
)
from sparsetrain.jobs import LOG_SOURCES, LogSource
from sparsetrain.spec import JobSpec
from sparsetrain.spec_files import load_spec
from sparsetrain.status import JobStatus

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "RETRY_STATUSES",
    "Call",
    "Retry",
    "ServerSentEvent",
    "Settings",
    "aparse_sse",
    "backoff",
    "build_request",
    "parse_sse",
    "raise_for_problem",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
URL_ENV, TOKEN_ENV = "SPARSETRAIN_URL", "SPARSETRAIN_TOKEN"
RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_BASE = 0.2  # seconds before the first retry; doubles per retry
BACKOFF_MAX = 5.0
JITTER_SEED = 0x5EED  # jitter is deterministic per client, so runs are reproducible
REGISTRIES = ("compressors", "models", "datasets", "samplers")
ARTIFACTS = ("model", "samples")
_JSONABLE: TypeAdapter[Any] = TypeAdapter(Any)


@dataclass(frozen=True)
class Call:
    """One REST request: what to send, whether resending it is safe, which statuses succeed."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    expect: tuple[int, ...] = (200,)


# -- building calls --------------------------------------------------------------------------


def _job_path(job_id: str, *rest: str) -> str:
    if not job_id or not job_id.strip():
        raise ValueError("a job id must not be empty")
    return "/".join(("/v1/jobs", quote(job_id.strip(), safe=""), *rest))


def spec_body(spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str]) -> Any:
    """The JSON body that submits ``spec``: a ``JobSpec`` as dumped; a mapping as given (the
    server validates it, and its ``ValidationFailed`` names each bad field; a newer server
    may accept fields this SDK does not know); a path as read by ``load_spec``, which
    validates it here (``SpecFileError``, ``pydantic.ValidationError``)."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(Path(spec))
    if isinstance(spec, JobSpec):
        return spec.model_dump(mode="json")
    return _JSONABLE.dump_python(dict(spec), mode="json")


def submit_call(
    spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str], idempotency_key: str | None
) -> Call:
    """POST /v1/jobs: 201 for a new job, 200 for a retry with the same key. Resent on
    transient failures only when it carries an ``Idempotency-Key``."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return Call(
        "POST",
        "/v1/jobs",
        json=spec_body(spec),
        headers=headers,
        idempotent=idempotency_key is not None,
        expect=(200, 201),
    )


def get_call(job_id: str) -> Call:
    return Call("GET", _job_path(job_id))


def normalize_status(status: JobStatus | str) -> JobStatus:
    """``status`` as a ``JobStatus`` (case-insensitive); ``ValueError`` lists the valid ones."""
    if isinstance(status, JobStatus):
        return status
    try:
        return JobStatus(status.strip().upper())
    except ValueError:
        known = ", ".join(s.value for s in JobStatus)
        raise ValueError(f"unknown job status {status!r}; expected one of {known}") from None


def list_call(status: JobStatus | str | None, limit: int, offset: int) -> Call:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = normalize_status(status).value
    return Call("GET", "/v1/jobs", params=params)


def cancel_call(job_id: str) -> Call:
    """Never resent: a cancel whose answer was lost would come back as a 409."""
    return Call("POST", _job_path(job_id, "cancel"), idempotent=False)


def scale_call(job_id: str, count: int) -> Call:
    """PATCH /v1/jobs/{id}: setting a target twice is the same as once, so it may be resent."""
    return Call("PATCH", _job_path(job_id), json={"workers": {"count": count}})


def delete_call(job_id: str) -> Call:
    return Call("DELETE", _job_path(job_id), expect=(204,))


def metrics_call(job_id: str, since: int, max_points: int | None) -> Call:
    params: dict[str, str | int] = {"since": since}
    if max_points is not None:
        params["max_points"] = max_points
    return Call("GET", _job_path(job_id, "metrics"), params=params)


def events_call(job_id: str, last_event_id: str | None) -> Call:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return Call("GET", _job_path(job_id, "events"), headers=headers)


def logs_call(job_id: str, source: LogSource = "events") -> Call:
    """GET /v1/jobs/{id}/logs of ``source`` (``events`` or ``workers``)."""
    if source not in LOG_SOURCES:
        raise ValueError(f"unknown log source {source!r}; expected one of {LOG_SOURCES}")
    return Call("GET", _job_path(job_id, "logs"), params={"source": source})


def checkpoints_call(job_id: str) -> Call:
    return Call("GET", _job_path(job_id, "checkpoints"))


def artifact_call(job_id: str, name: str) -> Call:
    """GET /v1/jobs/{id}/model or /samples (a file)."""
    if name not in ARTIFACTS:
        raise ValueError(f"unknown artifact {name!r}; expected one of {', '.join(ARTIFACTS)}")
    return Call("GET", _job_path(job_id, name))


def registry_call(name: str) -> Call:
    """GET /v1/compressors, /v1/models, /v1/datasets or /v1/samplers."""
    if name not in REGISTRIES:
        raise ValueError(f"unknown registry {name!r}; expected one of {', '.join(REGISTRIES)}")
    return Call("GET", f"/v1/{name}")


def health_call() -> Call:
    """GET /readyz: 200 ready, 503 not ready. A probe reports the state now: never resent."""
    return Call("GET", "/readyz", idempotent=False, expect=(200, 503))


# -- answers -----------------------------------------------------------------------------------


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        return {}
    return body if isinstance(body, dict) else {}


def _text(response: httpx.Response) -> str | None:
    try:
        return response.text.strip()[:1000] or None
    except httpx.ResponseNotRead:
        return None


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the ``ApiError`` subclass for an error status (>= 400); return otherwise.

    The problem+json body gives title, detail and field errors; a body that is not one
    gives its text as the detail. The response must have been read.
    """
    status = response.status_code
    if status < 400:
        return
    body = _problem_body(response)
    title = str(body.get("title") or response.reason_phrase or "HTTP error")
    detail = str(body["detail"]) if body.get("detail") is not None else None
    if not body:
        detail = _text(response)
    if status in (400, 422):
        errors = [
            FieldIssue(loc=list(item.get("loc") or []), msg=str(item.get("msg", "")))
            for item in body.get("errors") or []
            if isinstance(item, dict)
        ]
        raise ValidationFailed(status, title, detail, body, errors)
    kind: type[ApiError] = {404: NotFound, 409: Conflict, 401: Unauthorized, 403: Unauthorized}.get(
        status, ServerError if status >= 500 else ApiError
    )
    raise kind(status, title, detail, body)


def check(call: Call, response: httpx.Response) -> None:
    """Return when ``response`` is one of the statuses ``call`` expects; raise otherwise."""
    if response.status_code in call.expect:
        return
    raise_for_problem(response)
    raise ApiError(
        response.status_code,
        "Unexpected response",
        f"{call.method} {call.path} answered {response.status_code}",
    )


def build_request(
    http: httpx.Client | httpx.AsyncClient, call: Call, timeout: httpx.Timeout
) -> httpx.Request:
    """The request that sends ``call`` through ``http`` (its base URL and default headers),
    with ``timeout``. Mutates nothing; one is built per attempt."""
    return http.build_request(
        call.method,
        call.path,
        params=call.params,
        json=call.json,
        headers=call.headers,
        timeout=timeout,
    )


# -- retries and transport failures ------------------------------------------------------------


def should_retry(
    call: Call,
    attempt: int,
    retries: int,
    *,
    status: int | None = None,
    error: BaseException | None = None,
) -> bool:
    """True when the ``attempt``-th try (0-based) of ``call`` may be sent again: the call is
    idempotent, retries are left, and it failed with 502/503/504 or a connect/read failure."""
    if not call.idempotent or attempt >= retries:
        return False
    if status is not None:
        return status in RETRY_STATUSES
    return isinstance(
        error, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
    )


@dataclass
class Retry:
    """The retry state of one call by a client with ``settings``: whether a failed attempt
    ends the call, and how long to wait before the next one. ``next_delay`` advances
    ``attempt`` and draws from ``jitter`` (the client's, shared by its calls)."""

    call: Call
    settings: Settings
    jitter: random.Random
    attempt: int = 0

    def raise_unless_resendable(self, error: httpx.TransportError) -> None:
        """Return when the call may be resent after ``error``; raise our ``TransportError``
        (chained to ``error``) otherwise."""
        if not should_retry(self.call, self.attempt, self.settings.retries, error=error):
            raise transport_error(self.settings.url, error) from error

    def is_final(self, status: int) -> bool:
        """True when an answer with ``status`` ends the call (the caller then reads it if
        unexpected and calls ``check``); False when the call is to be resent."""
        return not should_retry(self.call, self.attempt, self.settings.retries, status=status)

    def next_delay(self) -> float:
        """Seconds to wait before resending (``backoff``); counts the attempt."""
        delay = backoff(self.attempt, self.jitter)
        self.attempt += 1
        return delay


def new_jitter() -> random.Random:
    """The per-client random source of the backoff jitter (fixed seed: reproducible runs)."""
    return random.Random(JITTER_SEED)


def backoff(attempt: int, jitter: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``min(0.2 * 2**attempt, 5.0)``
    plus up to 10% jitter, so many clients do not retry in lockstep."""
    delay = min(BACKOFF_BASE * 2**attempt, BACKOFF_MAX)
    return delay + jitter.uniform(0.0, delay / 10)


def transport_error(url: str, error: httpx.TransportError) -> TransportError:
    """Our ``TransportError`` for an httpx one, naming the server URL and what to do."""
    if isinstance(error, httpx.ConnectError):
        reason = str(error) or "connection failed"
        return TransportError(
            url,
            f"cannot reach the sparsetrain server at {url} ({reason}); is it running? "
            "start one with `sparsetrain serve`, or point SPARSETRAIN_URL / --url at one",
        )
    if isinstance(error, httpx.TimeoutException):
        what = type(error).__name__
        return TransportError(
            url, f"the sparsetrain server at {url} did not answer in time ({what})"
        )
    return TransportError(url, f"lost the connection to the sparsetrain server at {url}: {error}")


# -- client settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What a client talks to and how: the server's base URL, the headers every request
    sends, the default timeout, and how many times a safe request is resent."""

    url: str
    headers: Mapping[str, str]
    timeout: httpx.Timeout
    retries: int

    @classmethod
    def resolve(
        cls,
        url: str | None,
        token: str | None,
        timeout: float | httpx.Timeout | None,
        retries: int,
    ) -> Settings:
        """The settings a client was given, defaults and environment filled in
        (``resolve_url``, ``resolve_headers``, ``resolve_timeout``); ``retries`` at least 0."""
        return cls(
            resolve_url(url), resolve_headers(token), resolve_timeout(timeout), max(0, retries)
        )

    def httpx_options(self) -> dict[str, Any]:
        """The keyword arguments that make an ``httpx.Client`` or ``httpx.AsyncClient``
        send to this server with these headers and timeout."""
        return {"base_url": self.url, "headers": dict(self.headers), "timeout": self.timeout}


def resolve_url(url: str | None) -> str:
    """``url``, else ``$SPARSETRAIN_URL``, else ``DEFAULT_URL``; ``http://`` added if bare."""
    value = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    return value if "://" in value else f"http://{value}"


def resolve_headers(token: str | None) -> dict[str, str]:
    """The headers every request sends: a bearer token from ``token`` or ``$SPARSETRAIN_TOKEN``."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    headers = {"User-Agent": "sparsetrain-python"}
    if token:
        headers["Authorization"] = f"Bearer {token.strip()}"
    return headers


def resolve_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """``DEFAULT_TIMEOUT`` for None, else the given timeout (a number applies to every phase)."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def stream_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """``timeout`` without a read limit: an event stream is quiet while a job waits."""
    return httpx.Timeout(connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool)


def artifact_target(path: str | os.PathLike[str], job_id: str, name: str) -> Path:
    """Where a download writes: ``path``, or ``<path>/<job_id>-<name>.pt`` for a folder."""
    target = Path(path).expanduser()
    return target / f"{job_id}-{name}.pt" if target.is_dir() else target
