"""The Python SDK: ``Client`` (blocking) and ``AsyncClient`` mirror the REST nouns and verbs.

    with Client() as client:                    # $SPARSETRAIN_URL, else http://127.0.0.1:8000
        job = client.submit("job.yaml")         # a spec file, a JobSpec or a mapping
        job = client.wait(job.id, timeout=600)
        print(job.status, client.metrics(job.id)[-1].loss)

Every method raises ``TransportError`` when the server cannot be reached and an
``ApiError`` subclass (``NotFound``, ``Conflict``, ``ValidationFailed``, ``Unauthorized``,
``ServerError``) when it answers with an error. Reads, deletes and submits (which always
carry an ``Idempotency-Key``) are retried on connection failures and 502/503/504 with
exponential backoff; a cancel is never resent.
"""

from __future__ import annotations

import builtins
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from sparsetrain import _http
from sparsetrain._http import DEFAULT_TIMEOUT, DEFAULT_URL, Call, ServerSentEvent
from sparsetrain._support import AtomicFile, Deadline, Metrics
from sparsetrain.async_client import AsyncClient, AsyncJobRef
from sparsetrain.jobs import CheckpointEntry, Job, JobList, LogSource, MetricsPage
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncJobRef",
    "Client",
    "JobRef",
    "Metrics",
    "ServerSentEvent",
]

SpecLike = JobSpec | Mapping[str, Any] | str | os.PathLike[str]


class Client:
    """A blocking client of one sparsetrain server.

    ``url`` and ``token`` default to ``$SPARSETRAIN_URL`` / ``$SPARSETRAIN_TOKEN``, then to
    ``DEFAULT_URL`` and no token. ``timeout`` defaults to ``DEFAULT_TIMEOUT`` (30 s, 5 s to
    connect); ``retries`` is how many times a safe request is resent; ``transport`` replaces
    httpx's network transport (tests). Close it, or use it as a context manager.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = _http.Settings.resolve(url, token, timeout, retries)
        self._jitter = _http.new_jitter()
        self._http = httpx.Client(**self._settings.httpx_options(), transport=transport)

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:8000``."""
        return self._settings.url

    def close(self) -> None:
        """Close the connection pool; the client must not be used afterwards."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._settings.url!r})"

    # -- sending -------------------------------------------------------------------------------

    def _send(
        self, call: Call, *, stream: bool = False, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        """Send ``call``, resending it while the retry policy allows; return the response
        with an expected status (not yet read when ``stream``), or raise."""
        retry = _http.Retry(call, self._settings, self._jitter)
        timeout = timeout if timeout is not None else self._settings.timeout
        while True:
            request = _http.build_request(self._http, call, timeout)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                retry.raise_unless_resendable(error)
            else:
                if retry.is_final(response.status_code):
                    if response.status_code not in call.expect:
                        self._read_and_close(response)
                    _http.check(call, response)
                    return response
                response.close()
            time.sleep(retry.next_delay())

    def _read_and_close(self, response: httpx.Response) -> None:
        try:
            response.read()
        except httpx.TransportError as error:
            raise _http.transport_error(self._settings.url, error) from error
        finally:
            response.close()

    def _json(self, call: Call) -> Any:
        return self._send(call).json()

    # -- jobs ----------------------------------------------------------------------------------

    def submit(self, spec: SpecLike, *, idempotency_key: str | None = None) -> Job:
        """Submit a job and return it (PENDING).

        ``spec`` is a ``JobSpec``; a mapping, sent as given for the server to validate; or
        the path of a .yaml/.yml/.json spec file, read and validated here by ``load_spec``
        (``SpecFileError``, ``pydantic.ValidationError``). Without ``idempotency_key`` a fresh
        one is made, so a retried submit never makes two jobs; reusing a key returns the job
        first made with it. Raises ``ValidationFailed`` when the server refuses the spec (each
        field path in ``.lines()``), ``Conflict`` when the key was used with another spec.
        """
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        call = _http.submit_call(spec, key)
        return Job.model_validate(self._json(call))

    def submit_job(self, spec: SpecLike, *, idempotency_key: str | None = None) -> JobRef:
        """``submit``, returning a ``JobRef`` handle on the new job."""
        job = self.submit(spec, idempotency_key=idempotency_key)
        return JobRef(self, job.id, job)

    def job(self, job_id: str) -> JobRef:
        """A handle on the job ``job_id`` (nothing is sent until a method of it is called)."""
        return JobRef(self, job_id)

    def get(self, job_id: str) -> Job:
        """The job as the server knows it now. Raises ``NotFound``."""
        return Job.model_validate(self._json(_http.get_call(job_id)))

    def list(
        self, status: JobStatus | str | None = None, limit: int = 50, offset: int = 0
    ) -> JobList:
        """One page of jobs, newest first, optionally only those with ``status``
        (case-insensitive; ``ValueError`` for an unknown one). The server caps ``limit``."""
        return JobList.model_validate(self._json(_http.list_call(status, limit, offset)))

    def cancel(self, job_id: str) -> Job:
        """Stop the job and return it CANCELLED. Raises ``Conflict`` if it already ended,
        ``NotFound``. Never resent automatically."""
        return Job.model_validate(self._json(_http.cancel_call(job_id)))

    def scale(self, job_id: str, count: int) -> Job:
        """Ask the job to train with ``count`` workers; it resizes at a step boundary without
        a restart. Raises ``ValidationFailed`` outside its ``workers.min``..``max``,
        ``Conflict`` once it has ended."""
        return Job.model_validate(self._json(_http.scale_call(job_id, count)))

    def delete(self, job_id: str) -> None:
        """Delete an ended job and its records. Raises ``Conflict`` if it is still active."""
        self._send(_http.delete_call(job_id))

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> Job:
        """Poll every ``poll`` seconds until the job has ended; return the ended job.
        Raises ``TimeoutError`` when it has not ended within ``timeout`` seconds."""
        deadline = Deadline(timeout, poll)
        while True:
            job = self.get(job_id)
            if job.status.is_terminal:
                return job
            time.sleep(deadline.next_sleep(job))

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[ServerSentEvent]:
        """The job's Server-Sent Events as they happen: ``status``, ``checkpoint``, ``log``
        (data: a ``JobEvent``), ``metrics`` (data: a ``MetricsPage`` of new records), and a
        final ``end`` after the job has ended, when the server closes the stream. With
        ``last_event_id`` it resumes after that event. The request is sent when iteration
        starts, so ``NotFound`` is raised then; the stream has no read timeout."""
        call = _http.events_call(job_id, last_event_id)
        response = self._send(
            call, stream=True, timeout=_http.stream_timeout(self._settings.timeout)
        )
        try:
            yield from _http.parse_sse(self._lines(response))
        finally:
            response.close()

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        try:
            yield from response.iter_lines()
        except httpx.TransportError as error:
            raise _http.transport_error(self._settings.url, error) from error

    def metrics(self, job_id: str, since: int = 0, max_points: int | None = None) -> Metrics:
        """Step records from step ``since`` on (evenly downsampled to ``max_points`` when
        given, else to the server's cap) and the evaluations from ``since`` on."""
        page = MetricsPage.model_validate(self._json(_http.metrics_call(job_id, since, max_points)))
        return Metrics.from_page(page)

    def logs(self, job_id: str, source: LogSource = "events") -> str:
        """The job's log as text: ``events``, every event as a line, oldest first (with the
        evaluations and, once it ended, a summary line); ``workers``, what its supervisor
        and workers wrote, tracebacks included, each file after a ``==> name <==`` line."""
        return self._send(_http.logs_call(job_id, source)).text

    def checkpoints(self, job_id: str) -> builtins.list[CheckpointEntry]:
        """The job's checkpoints that are complete on storage, oldest first."""
        return [
            CheckpointEntry.model_validate(c) for c in self._json(_http.checkpoints_call(job_id))
        ]

    def download_model(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the ended job's final weights (a torch state dict) at ``path`` (a folder gets
        ``<job_id>-model.pt``) and return where. The file appears only once complete.
        Raises ``NotFound`` when the job has no model file (yet)."""
        return self._download(job_id, "model", path)

    def download_samples(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Save a sampling job's posterior samples (a (count, d) tensor of flat parameter
        vectors) at ``path`` (a folder gets ``<job_id>-samples.pt``), as ``download_model``."""
        return self._download(job_id, "samples", path)

    def _download(self, job_id: str, name: str, path: str | os.PathLike[str]) -> Path:
        target = _http.artifact_target(path, job_id, name)
        response = self._send(_http.artifact_call(job_id, name), stream=True)
        try:
            with AtomicFile(target) as out:
                try:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                except httpx.TransportError as error:
                    raise _http.transport_error(self._settings.url, error) from error
        finally:
            response.close()
        return target

    # -- registries and health -----------------------------------------------------------------

    def registry(self, name: str) -> builtins.list[dict[str, Any]]:
        """The kinds a spec may name from the registry ``name`` (``compressors``, ``models``,
        ``datasets`` or ``samplers``; ``ValueError`` for another): each with ``kind``,
        ``description`` and ``parameters`` (the JSON Schema of its spec)."""
        result: builtins.list[dict[str, Any]] = self._json(_http.registry_call(name))
        return result

    def compressors(self) -> builtins.list[dict[str, Any]]:
        """The compression kinds a spec may name (``registry("compressors")``)."""
        return self.registry("compressors")

    def models(self) -> builtins.list[dict[str, Any]]:
        """The model kinds a spec may name (``registry("models")``)."""
        return self.registry("models")

    def samplers(self) -> builtins.list[dict[str, Any]]:
        """The SG-MCMC sampler kinds a spec may name (``registry("samplers")``)."""
        return self.registry("samplers")

    def datasets(self) -> builtins.list[dict[str, Any]]:
        """The data kinds a spec may name (``registry("datasets")``)."""
        return self.registry("datasets")

    def health(self) -> bool:
        """True when the server is ready (``GET /readyz`` is 200: database and Ray reachable),
        False when it answers that it is not. Raises ``TransportError`` when unreachable."""
        return self._send(_http.health_call()).status_code == 200


class JobRef:
    """A handle on one job of a ``Client``: the job verbs without repeating its id.

    ``last`` is the job as most recently fetched through this handle (None before any).
    """

    def __init__(self, client: Client, job_id: str, job: Job | None = None) -> None:
        self.client = client
        self.id = job_id
        self.last = job

    def __repr__(self) -> str:
        status = f" {self.last.status.value}" if self.last is not None else ""
        return f"JobRef({self.id!r}{status})"

    def refresh(self) -> Job:
        """The job now (``Client.get``)."""
        self.last = self.client.get(self.id)
        return self.last

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> Job:
        """Until the job has ended (``Client.wait``)."""
        self.last = self.client.wait(self.id, timeout=timeout, poll=poll)
        return self.last

    def events(self, last_event_id: str | None = None) -> Iterator[ServerSentEvent]:
        """The job's event stream (``Client.events``)."""
        return self.client.events(self.id, last_event_id)

    def metrics(self, since: int = 0, max_points: int | None = None) -> Metrics:
        """The job's metric records (``Client.metrics``)."""
        return self.client.metrics(self.id, since=since, max_points=max_points)

    def logs(self, source: LogSource = "events") -> str:
        """The job's log (``Client.logs``)."""
        return self.client.logs(self.id, source)

    def checkpoints(self) -> list[CheckpointEntry]:
        """The job's checkpoints (``Client.checkpoints``)."""
        return self.client.checkpoints(self.id)

    def download_model(self, path: str | os.PathLike[str]) -> Path:
        """Save the final weights (``Client.download_model``)."""
        return self.client.download_model(self.id, path)

    def download_samples(self, path: str | os.PathLike[str]) -> Path:
        """Save the posterior samples (``Client.download_samples``)."""
        return self.client.download_samples(self.id, path)

    def load_model(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Download the final model (to ``path``, default a temporary folder that is removed
        afterwards) and return it loaded: ``sparsetrain.load_model``. Needs torch."""
        from sparsetrain.models import load_model

        if path is not None:
            return load_model(self.download_model(path))
        with tempfile.TemporaryDirectory() as folder:
            return load_model(self.download_model(folder))

    def cancel(self) -> Job:
        """Cancel the job (``Client.cancel``)."""
        self.last = self.client.cancel(self.id)
        return self.last

    def scale(self, count: int) -> Job:
        """Resize the job to ``count`` workers (``Client.scale``)."""
        self.last = self.client.scale(self.id, count)
        return self.last

    def delete(self) -> None:
        """Delete the ended job (``Client.delete``)."""
        self.client.delete(self.id)
