"""The retry policy, error mapping and transport failures, against ``httpx.MockTransport``."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparsetrain import (
    ApiError,
    AsyncClient,
    Client,
    NotFound,
    ServerError,
    TransportError,
    Unauthorized,
    _http,
)
from sparsetrain.jobs import Job
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus
from tests.api.conftest import unused_port
from tests.specs import job_spec

JOB_ID = "0123456789abcdef"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "BACKOFF_BASE", 0.0001)


def job_json(status: JobStatus = JobStatus.PENDING) -> dict[str, Any]:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    job = Job(
        id=JOB_ID,
        status=status,
        spec=JobSpec.model_validate(job_spec()),
        created_at=now,
        updated_at=now,
    )
    return job.model_dump(mode="json")


def unavailable() -> httpx.Response:
    body = {"title": "Not ready", "status": 503, "detail": "unreachable: ray"}
    return httpx.Response(503, json=body, headers={"content-type": "application/problem+json"})


class Recorder:
    """A handler answering from a script of responses (the last one repeats), recording calls."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **kwargs: Any) -> Client:
        return Client("http://sdk.test", transport=httpx.MockTransport(self), **kwargs)


def test_get_is_retried_on_503_then_succeeds() -> None:
    calls = Recorder(unavailable(), unavailable(), httpx.Response(200, json=job_json()))
    with calls.client() as client:
        assert client.get(JOB_ID).id == JOB_ID
    assert len(calls.requests) == 3


def test_retries_run_out_with_a_server_error() -> None:
    calls = Recorder(httpx.Response(502, text="bad gateway"))
    with calls.client(retries=2) as client, pytest.raises(ServerError) as caught:
        client.list()
    assert len(calls.requests) == 3
    assert caught.value.status == 502 and caught.value.detail == "bad gateway"


def test_submit_is_retried_with_the_same_idempotency_key() -> None:
    calls = Recorder(unavailable(), httpx.Response(201, json=job_json()))
    with calls.client() as client:
        assert client.submit(job_spec()).id == JOB_ID
    keys = [request.headers.get("idempotency-key") for request in calls.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0] is not None and len(keys[0]) == 32
    calls = Recorder(unavailable(), httpx.Response(200, json=job_json()))
    with calls.client() as client:
        client.submit(job_spec(), idempotency_key="mine")
    assert [r.headers["idempotency-key"] for r in calls.requests] == ["mine", "mine"]


def test_each_submit_gets_a_fresh_key() -> None:
    calls = Recorder(httpx.Response(201, json=job_json()))
    with calls.client() as client:
        client.submit(job_spec())
        client.submit(job_spec())
    first, second = (r.headers["idempotency-key"] for r in calls.requests)
    assert first != second


def test_a_submit_without_a_key_is_not_retried() -> None:
    call = _http.submit_call(JobSpec.model_validate(job_spec()), None)
    assert "Idempotency-Key" not in call.headers and not call.idempotent
    assert not _http.should_retry(call, 0, 3, status=503)
    assert _http.should_retry(_http.submit_call(job_spec(), "k"), 0, 3, status=503)


def test_cancel_is_never_retried() -> None:
    calls = Recorder(unavailable(), httpx.Response(200, json=job_json(JobStatus.CANCELLED)))
    with calls.client() as client, pytest.raises(ServerError) as caught:
        client.cancel(JOB_ID)
    assert len(calls.requests) == 1
    assert str(caught.value) == "503 Not ready: unreachable: ray"
    calls = Recorder(httpx.ConnectError("refused"))
    with calls.client() as client, pytest.raises(TransportError):
        client.cancel(JOB_ID)
    assert len(calls.requests) == 1


def test_connect_errors_and_read_timeouts_are_retried() -> None:
    calls = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(204))
    with calls.client() as client:
        client.delete(JOB_ID)
    assert len(calls.requests) == 3
    calls = Recorder(httpx.ReadTimeout("slow"))
    with calls.client(retries=1) as client, pytest.raises(TransportError, match="in time"):
        client.get(JOB_ID)
    assert len(calls.requests) == 2


def test_4xx_is_not_retried_and_a_plain_text_body_is_the_detail() -> None:
    calls = Recorder(httpx.Response(404, text="nothing here\n"))
    with calls.client() as client, pytest.raises(NotFound) as caught:
        client.get(JOB_ID)
    assert len(calls.requests) == 1
    assert caught.value.detail == "nothing here" and caught.value.problem == {}
    calls = Recorder(httpx.Response(418, json={"title": "Teapot", "status": 418}))
    with calls.client() as client, pytest.raises(ApiError) as other:
        client.get(JOB_ID)
    assert type(other.value) is ApiError and str(other.value) == "418 Teapot"


def test_connection_refused_names_the_url_and_the_fix() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    with Client(url, retries=1) as client, pytest.raises(TransportError) as caught:
        client.get(JOB_ID)
    assert caught.value.url == url
    assert url in str(caught.value) and "sparsetrain serve" in str(caught.value)


def test_token_and_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSETRAIN_URL", "sdk.test:9000/")
    monkeypatch.setenv("SPARSETRAIN_TOKEN", "s3cret")
    calls = Recorder(httpx.Response(401, json={"title": "AuthenticationError", "status": 401}))
    client = Client(transport=httpx.MockTransport(calls))
    assert client.url == "http://sdk.test:9000"
    with client, pytest.raises(Unauthorized):
        client.get(JOB_ID)
    request = calls.requests[0]
    assert request.headers["authorization"] == "Bearer s3cret"
    assert str(request.url) == f"http://sdk.test:9000/v1/jobs/{JOB_ID}"
    monkeypatch.delenv("SPARSETRAIN_URL")
    monkeypatch.delenv("SPARSETRAIN_TOKEN")
    bare = Client()
    assert bare.url == _http.DEFAULT_URL and "authorization" not in bare._http.headers
    bare.close()


def test_backoff_doubles_up_to_a_cap_with_reproducible_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_http, "BACKOFF_BASE", 0.2)
    delays = [_http.backoff(attempt, _http.new_jitter()) for attempt in range(8)]
    for delay, base in zip(delays, [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0], strict=True):
        assert base <= delay <= base * 1.1
    jitter_a, jitter_b = _http.new_jitter(), _http.new_jitter()
    assert [_http.backoff(1, jitter_a) for _ in range(3)] == [
        _http.backoff(1, jitter_b) for _ in range(3)
    ]
    assert _http.backoff(1, random.Random(1)) != _http.backoff(1, random.Random(2))


def test_download_is_atomic(tmp_path: Path) -> None:
    payload = b"weights" * 10_000
    calls = Recorder(httpx.Response(200, content=payload))
    with calls.client() as client:
        saved = client.download_model(JOB_ID, tmp_path)
    assert saved == tmp_path / f"{JOB_ID}-model.pt" and saved.read_bytes() == payload

    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"partial"
            raise httpx.ReadError("connection reset")

    calls = Recorder(httpx.Response(200, stream=Broken()))
    target = tmp_path / "out" / "model.pt"
    with calls.client() as client, pytest.raises(TransportError, match="lost the connection"):
        client.download_model(JOB_ID, target)
    assert list(target.parent.iterdir()) == []


@pytest.mark.anyio
async def test_async_client_shares_the_policy() -> None:
    calls = Recorder(unavailable(), httpx.Response(200, json=job_json()))
    cancels = Recorder(unavailable())
    async with AsyncClient("http://sdk.test", transport=httpx.MockTransport(calls)) as client:
        assert (await client.get(JOB_ID)).id == JOB_ID
    async with AsyncClient("http://sdk.test", transport=httpx.MockTransport(cancels)) as client:
        with pytest.raises(ServerError):
            await client.cancel(JOB_ID)
    assert len(calls.requests) == 2 and len(cancels.requests) == 1
    url = f"http://127.0.0.1:{unused_port()}"
    async with AsyncClient(url, retries=0) as client:
        with pytest.raises(TransportError, match="sparsetrain serve"):
            await client.health()
