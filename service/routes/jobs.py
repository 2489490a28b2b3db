"""``/v1/jobs``: submit, list, inspect, cancel and delete jobs, and read what they produce."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse

from sparsetrain.errors import SpecError
from sparsetrain.jobs import CheckpointEntry, Job, JobList, JobPatch, LogSource, MetricsPage
from sparsetrain.service.deps import Principal, State
from sparsetrain.service.openapi import SSE_EVENT, problems
from sparsetrain.service.store import JobEnded, JobFileNotFound, JobNotFound
from sparsetrain.service.validation import check_spec
from sparsetrain.spec import JobSpec
from sparsetrain.spec.budget import check_job_memory
from sparsetrain.status import JobStatus

# Every route takes a token (when tokens are on) and has parameters that can be malformed.
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problems(401, 422))
JobId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$", description="Job id.")]
SSE_POLL_S = 0.25
TERMINAL = tuple(status for status in JobStatus if status.is_terminal)
# The largest integer the store (SQLite, 64-bit) can compare with: offsets, steps, event ids.
MAX_INT64 = 2**63 - 1


@router.post(
    "",
    status_code=201,
    response_model=Job,
    summary="Submit a job",
    responses={
        200: {"model": Job, "description": "A retry: the job first made with this key."},
        **problems(400, 409),
    },
)
def submit(
    spec: JobSpec,
    state: State,
    principal: Principal,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Job:
    """Store the job as PENDING; the control plane starts it within a moment. A retry with
    the same ``Idempotency-Key`` returns the first job (200) instead of making another."""
    checked = check_spec(
        spec,
        principal=principal,
        layout=state.layout,
        allow_custom_code=state.settings.allow_custom_code,
    )
    check_job_memory(checked, state.settings.worker_memory_limit())
    job, created = state.store.create_job(checked, principal, idempotency_key)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    state: State,
    principal: Principal,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> JobList:
    limit = min(limit, state.settings.max_page_size)
    return state.store.list_jobs(principal, status=status, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=Job, summary="One job", responses=problems(404))
def get_job(job_id: JobId, state: State, principal: Principal) -> Job:
    return state.store.get_job(job_id, principal)


@router.post(
    "/{job_id}/cancel", response_model=Job, summary="Cancel a job", responses=problems(404, 409)
)
def cancel(job_id: JobId, state: State, principal: Principal) -> Job:
    """Stop the job's workers and mark it CANCELLED; 409 if it has already ended."""
    job = state.store.get_job(job_id, principal)
    if job.status not in (JobStatus.PENDING, *TERMINAL):
        state.launcher.cancel(job_id)
    return state.store.transition(job_id, JobStatus.CANCELLED, f"cancelled by {principal}")


@router.patch(
    "/{job_id}",
    response_model=Job,
    summary="Resize a job while it runs",
    responses=problems(400, 404, 409),
)
def patch(job_id: JobId, change: JobPatch, state: State, principal: Principal) -> Job:
    """Set the number of workers the job trains with (``workers.count``, within the spec's
    ``workers.min``..``workers.max``). The job resizes at a step boundary without a restart:
    joiners start from the current parameters, leavers hand their memory to the aggregate.
    409 once the job has ended."""
    job = state.store.get_job(job_id, principal)
    if job.status.is_terminal:
        raise JobEnded(job_id, job.status)
    count, workers = change.workers.count, job.spec.workers
    workers.check_count(count)
    if job.spec.exchange.mode == "async" and count != workers.count:
        raise SpecError(("workers", "count"), "async jobs cannot be resized")
    old = job.target_workers or workers.count
    job = state.store.set_target_workers(
        job_id, count, f"scale requested by {principal}: {old} -> {count} workers"
    )
    if job.status is not JobStatus.PENDING:
        state.launcher.scale(job_id, count)  # without a supervisor it applies at (re)launch
    return job


@router.delete(
    "/{job_id}", status_code=204, summary="Delete an ended job", responses=problems(404, 409)
)
def delete(job_id: JobId, state: State, principal: Principal) -> Response:
    job = state.store.get_job(job_id, principal)
    if job.status.is_terminal:  # files first: a failure leaves the job there to retry
        state.launcher.delete_artifacts(job_id, job.spec)
    state.store.delete_job(job_id, principal)
    return Response(status_code=204)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsPage,
    summary="Metric records",
    responses=problems(404),
)
def metrics(
    job_id: JobId,
    state: State,
    principal: Principal,
    since: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    max_points: Annotated[int | None, Query(ge=2, le=100_000)] = None,
) -> MetricsPage:
    """Step records from ``since`` on (evenly downsampled to ``max_points``) and every
    evaluation from ``since`` on."""
    state.store.get_job(job_id, principal)
    points = max_points or state.settings.metrics_max_points
    return state.store.metrics(job_id, since=since, max_points=points)


@router.get(
    "/{job_id}/events",
    summary="Server-Sent Events until the job ends",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The job's events, then its new metrics, then ``end``.",
            "content": {"text/event-stream": {"itemSchema": SSE_EVENT}},
        },
        **problems(404),
    },
)
async def events(
    job_id: JobId,
    request: Request,
    state: State,
    principal: Principal,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """A ``text/event-stream`` of the job's events (``status``, ``checkpoint``, ``log``) and
    new metrics (``metrics``), in order; ends with an ``end`` event once the job has ended.
    ``Last-Event-ID`` resumes after that event."""
    await run_in_threadpool(state.store.get_job, job_id, principal)
    after = _resume_after(last_event_id)
    return StreamingResponse(
        _event_stream(state, job_id, after, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_after(last_event_id: str | None) -> int:
    """The event id a ``Last-Event-ID`` header names (ASCII digits), capped to what the store
    can compare; 0, from the first event, for a missing or malformed one."""
    value = (last_event_id or "").strip()
    if not (value.isascii() and value.isdigit()):
        return 0
    return min(int(value), MAX_INT64)


async def _event_stream(
    state: State, job_id: str, after: int, request: Request
) -> AsyncIterator[str]:
    store = state.store
    next_step, last_eval = 0, -1
    while True:
        try:
            job = await run_in_threadpool(store.get_job, job_id)
        except JobNotFound:
            return
        for event in await run_in_threadpool(store.events, job_id, after):
            after = event.seq
            yield f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
        page = await run_in_threadpool(store.metrics, job_id, next_step)
        page.evals = [e for e in page.evals if e.step > last_eval]
        if page.steps or page.evals:
            next_step = page.steps[-1].step + 1 if page.steps else next_step
            last_eval = page.evals[-1].step if page.evals else last_eval
            yield f"event: metrics\ndata: {page.model_dump_json()}\n\n"
        if job.status.is_terminal:
            yield f"event: end\ndata: {job.model_dump_json(include={'id', 'status', 'error'})}\n\n"
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(SSE_POLL_S)


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    summary="The job's log",
    responses=problems(404),
)
def logs(
    job_id: JobId,
    state: State,
    principal: Principal,
    source: Annotated[
        LogSource,
        Query(description="events: the job's events; workers: its processes' own logs."),
    ] = "events",
) -> str:
    """``events``: every event of the job as a line of text, oldest first (evaluations
    among them, and a summary line once it ended). ``workers``: what the job's supervisor
    and workers wrote (their output, and the tracebacks of their failures), each file after
    a ``==> name <==`` line, the end of each when it is long; empty before they start."""
    state.store.get_job(job_id, principal)
    if source == "workers":
        logs = state.launcher.worker_logs(job_id)
        return "".join(f"==> {name} <==\n{text.rstrip()}\n" for name, text in logs)
    lines = []
    for event in state.store.events(job_id, 0, limit=100_000):
        status = f" [{event.status.value}]" if event.status else ""
        lines.append(f"{event.time.isoformat()} {event.kind}{status} {event.message}")
    return "\n".join(lines) + ("\n" if lines else "")


@router.get(
    "/{job_id}/checkpoints",
    response_model=list[CheckpointEntry],
    summary="Checkpoints",
    responses=problems(404),
)
def checkpoints(job_id: JobId, state: State, principal: Principal) -> list[CheckpointEntry]:
    job = state.store.get_job(job_id, principal)
    return [CheckpointEntry(**c) for c in state.launcher.checkpoints(job_id, job.spec)]


def _binary(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **problems(404),
    }


def _artifact(job_id: str, path: str | None, what: str) -> FileResponse:
    """The file at ``path`` (local only), or 404 naming ``what`` is missing."""
    if path is None or "://" in path:
        raise JobFileNotFound(job_id, what)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job_id}-{what}.pt")


@router.get(
    "/{job_id}/model",
    summary="The final weights (a torch state dict)",
    response_class=FileResponse,
    responses=_binary("The model file."),
)
def model(job_id: JobId, state: State, principal: Principal) -> FileResponse:
    """``torch.load(file, weights_only=True)`` gives the trained module's state dict."""
    job = state.store.get_job(job_id, principal)
    path = state.launcher.model_path(job_id, job.spec) if job.status.is_terminal else None
    return _artifact(job_id, path, "model")


@router.get(
    "/{job_id}/samples",
    summary="A sampling job's posterior samples",
    response_class=FileResponse,
    responses=_binary("The samples file."),
)
def samples(job_id: JobId, state: State, principal: Principal) -> FileResponse:
    """``torch.load(file, weights_only=True)`` gives a (count, d) tensor of flat parameter
    vectors, oldest first; 404 unless the job sampled (``objective: sample``) and ended."""
    job = state.store.get_job(job_id, principal)
    path = state.launcher.samples_path(job_id, job.spec) if job.status.is_terminal else None
    return _artifact(job_id, path, "samples")
