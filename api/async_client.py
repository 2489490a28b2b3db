"""``AsyncClient``: the same verbs as ``Client``, as coroutines (asyncio).

It builds its requests, maps errors and retries exactly as ``Client`` does (both use
``sparsetrain._http``); see ``sparsetrain.client`` for what each verb promises and raises.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from sparsetrain import _http
from sparsetrain._http import Call, ServerSentEvent
from sparsetrain._support import AtomicFile, Deadline, Metrics
from sparsetrain.jobs import CheckpointEntry, Job, JobList, LogSource, MetricsPage
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus

SpecLike = JobSpec | Mapping[str, Any] | str | os.PathLike[str]


class AsyncClient:
    """An asyncio client of one sparsetrain server; arguments as for ``Client``
    (``transport`` is an ``httpx.AsyncBaseTransport``, e.g. ``httpx.ASGITransport(app)``).
    Close it with ``await aclose()`` or use ``async with``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = _http.Settings.resolve(url, token, timeout, retries)
        self._jitter = _http.new_jitter()
        self._http = httpx.AsyncClient(**self._settings.httpx_options(), transport=transport)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._settings.url

    async def aclose(self) -> None:
        """Close the connection pool; the client must not be used afterwards."""
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self._settings.url!r})"

    # -- sending -------------------------------------------------------------------------------

    async def _send(
        self, call: Call, *, stream: bool = False, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        """As ``Client._send``."""
        retry = _http.Retry(call, self._settings, self._jitter)
        timeout = timeout if timeout is not None else self._settings.timeout
        while True:
            request = _http.build_request(self._http, call, timeout)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                retry.raise_unless_resendable(error)
            else:
                if retry.is_final(response.status_code):
                    if response.status_code not in call.expect:
                        await self._read_and_close(response)
                    _http.check(call, response)
                    return response
                await response.aclose()
            await asyncio.sleep(retry.next_delay())

    async def _read_and_close(self, response: httpx.Response) -> None:
        try:
            await response.aread()
        except httpx.TransportError as error:
            raise _http.transport_error(self._settings.url, error) from error
        finally:
            await response.aclose()

    async def _json(self, call: Call) -> Any:
        return (await self._send(call)).json()

    # -- jobs ----------------------------------------------------------------------------------

    async def submit(self, spec: SpecLike, *, idempotency_key: str | None = None) -> Job:
        """Submit a job (``Client.submit``): a fresh Idempotency-Key unless one is given."""
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        call = _http.submit_call(spec, key)
        return Job.model_validate(await self._json(call))

    async def submit_job(
        self, spec: SpecLike, *, idempotency_key: str | None = None
    ) -> AsyncJobRef:
        """``submit``, returning an ``AsyncJobRef`` handle on the new job."""
        job = await self.submit(spec, idempotency_key=idempotency_key)
        return AsyncJobRef(self, job.id, job)

    def job(self, job_id: str) -> AsyncJobRef:
        """A handle on the job ``job_id`` (nothing is sent until a method of it is awaited)."""
        return AsyncJobRef(self, job_id)

    async def get(self, job_id: str) -> Job:
        """The job now. Raises ``NotFound``."""
        return Job.model_validate(await self._json(_http.get_call(job_id)))

    async def list(
        self, status: JobStatus | str | None = None, limit: int = 50, offset: int = 0
    ) -> JobList:
        """One page of jobs, newest first (``Client.list``)."""
        return JobList.model_validate(await self._json(_http.list_call(status, limit, offset)))

    async def cancel(self, job_id: str) -> Job:
        """Cancel the job (``Client.cancel``); ``Conflict`` if it already ended. Not resent."""
        return Job.model_validate(await self._json(_http.cancel_call(job_id)))

    async def scale(self, job_id: str, count: int) -> Job:
        """Resize the job to ``count`` workers (``Client.scale``)."""
        return Job.model_validate(await self._json(_http.scale_call(job_id, count)))

    async def delete(self, job_id: str) -> None:
        """Delete an ended job; ``Conflict`` if it is still active."""
        await self._send(_http.delete_call(job_id))

    async def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> Job:
        """Poll until the job has ended; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = Deadline(timeout, poll)
        while True:
            job = await self.get(job_id)
            if job.status.is_terminal:
                return job
            await asyncio.sleep(deadline.next_sleep(job))

    async def events(
        self, job_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[ServerSentEvent]:
        """The job's Server-Sent Events until the server ends the stream after ``end``
        (``Client.events``); iterate with ``async for``."""
        call = _http.events_call(job_id, last_event_id)
        response = await self._send(
            call, stream=True, timeout=_http.stream_timeout(self._settings.timeout)
        )
        try:
            async for event in _http.aparse_sse(self._lines(response)):
                yield event
        finally:
            await response.aclose()

    async def _lines(self, response: httpx.Response) -> AsyncIterator[str]:
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.TransportError as error:
            raise _http.transport_error(self._settings.url, error) from error

    async def metrics(self, job_id: str, since: int = 0, max_points: int | None = None) -> Metrics:
        """The job's step records and evaluations from ``since`` on (``Client.metrics``)."""
        data = await self._json(_http.metrics_call(job_id, since, max_points))
        return Metrics.from_page(MetricsPage.model_validate(data))

    async def logs(self, job_id: str, source: LogSource = "events") -> str:
        """The job's log as text, of ``source`` (``Client.logs``)."""
        return (await self._send(_http.logs_call(job_id, source))).text

    async def checkpoints(self, job_id: str) -> builtins.list[CheckpointEntry]:
        """The job's complete checkpoints, oldest first."""
        data = await self._json(_http.checkpoints_call(job_id))
        return [CheckpointEntry.model_validate(c) for c in data]

    async def download_model(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the final weights at ``path`` atomically (``Client.download_model``)."""
        return await self._download(job_id, "model", path)

    async def download_samples(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Save a sampling job's posterior samples (``Client.download_samples``)."""
        return await self._download(job_id, "samples", path)

    async def _download(self, job_id: str, name: str, path: str | os.PathLike[str]) -> Path:
        target = _http.artifact_target(path, job_id, name)
        response = await self._send(_http.artifact_call(job_id, name), stream=True)
        try:
            with AtomicFile(target) as out:
                try:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
                except httpx.TransportError as error:
                    raise _http.transport_error(self._settings.url, error) from error
        finally:
            await response.aclose()
        return target

    # -- registries and health -----------------------------------------------------------------

    async def registry(self, name: str) -> builtins.list[dict[str, Any]]:
        """The kinds a spec may name from the registry ``name`` (``Client.registry``)."""
        result: builtins.list[dict[str, Any]] = await self._json(_http.registry_call(name))
        return result

    async def compressors(self) -> builtins.list[dict[str, Any]]:
        """The compression kinds a spec may name."""
        return await self.registry("compressors")

    async def models(self) -> builtins.list[dict[str, Any]]:
        """The model kinds a spec may name."""
        return await self.registry("models")

    async def samplers(self) -> builtins.list[dict[str, Any]]:
        """The SG-MCMC sampler kinds a spec may name."""
        return await self.registry("samplers")

    async def datasets(self) -> builtins.list[dict[str, Any]]:
        """The data kinds a spec may name."""
        return await self.registry("datasets")

    async def health(self) -> bool:
        """True when ``GET /readyz`` is 200, False when 503; ``TransportError`` when unreachable."""
        return (await self._send(_http.health_call())).status_code == 200


class AsyncJobRef:
    """A handle on one job of an ``AsyncClient`` (as ``JobRef``, with coroutines)."""

    def __init__(self, client: AsyncClient, job_id: str, job: Job | None = None) -> None:
        self.client = client
        self.id = job_id
        self.last = job

    def __repr__(self) -> str:
        status = f" {self.last.status.value}" if self.last is not None else ""
        return f"AsyncJobRef({self.id!r}{status})"

    async def refresh(self) -> Job:
        self.last = await self.client.get(self.id)
        return self.last

    async def wait(self, timeout: float | None = None, poll: float = 1.0) -> Job:
        self.last = await self.client.wait(self.id, timeout=timeout, poll=poll)
        return self.last

    def events(self, last_event_id: str | None = None) -> AsyncIterator[ServerSentEvent]:
        return self.client.events(self.id, last_event_id)

    async def metrics(self, since: int = 0, max_points: int | None = None) -> Metrics:
        return await self.client.metrics(self.id, since=since, max_points=max_points)

    async def logs(self, source: LogSource = "events") -> str:
        return await self.client.logs(self.id, source)

    async def checkpoints(self) -> list[CheckpointEntry]:
        return await self.client.checkpoints(self.id)

    async def download_model(self, path: str | os.PathLike[str]) -> Path:
        return await self.client.download_model(self.id, path)

    async def download_samples(self, path: str | os.PathLike[str]) -> Path:
        return await self.client.download_samples(self.id, path)

    async def cancel(self) -> Job:
        self.last = await self.client.cancel(self.id)
        return self.last

    async def scale(self, count: int) -> Job:
        self.last = await self.client.scale(self.id, count)
        return self.last

    async def delete(self) -> None:
        await self.client.delete(self.id)
