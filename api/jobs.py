"""What the control plane returns: jobs, pages of jobs, events, errors (problem+json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus

WorkerState = Literal["training", "standby", "starting", "ended"]


class WorkerInfo(BaseModel):
    """One worker of a job: where it runs and how far it got."""

    model_config = ConfigDict(extra="forbid")

    rank: int | None = Field(
        default=None, ge=0, description="Its rank in the group; None while not training."
    )
    slot: int = Field(ge=0, description="Its name slot: the actor is job-<id>-worker-<slot>.")
    name: str = Field(description="The Ray actor's name (namespace sparsetrain).")
    state: WorkerState = Field(
        description="training: a rank of the group; standby: built, waiting to join; "
        "starting: building its replica; ended: the job has ended."
    )
    node_id: str | None = Field(default=None, description="The Ray node it runs on.")
    node_ip: str | None = Field(default=None, description="That node's IP address.")
    actor_id: str | None = Field(default=None, description="The Ray actor id.")
    pid: int | None = Field(default=None, ge=0, description="Its process id on that node.")
    gpu_ids: list[int | str] = Field(
        default_factory=list, description="The GPUs Ray gave it (empty: CPU only)."
    )
    last_step: int | None = Field(
        default=None, ge=0, description="The last step it took part in (None: none yet)."
    )


class Job(BaseModel):
    """A submitted job as the server knows it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str | None = None
    status: JobStatus
    spec: JobSpec
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    step: int = Field(default=0, ge=0, description="Steps completed so far.")
    total_steps: int | None = None
    workers: int | None = Field(default=None, ge=0, description="Live workers, last reported.")
    target_workers: int | None = Field(
        default=None, ge=1, description="Size asked for by the last scale request, if any."
    )
    worker_details: list[WorkerInfo] | None = Field(
        default=None,
        description="Each worker, last reported: rank, Ray node, actor, process, GPUs, state "
        "and last step (None until the supervisor has reported them).",
    )
    restarts: int = Field(default=0, ge=0, description="Times the supervisor was relaunched.")
    error: str | None = Field(default=None, description="Why the job failed, in one line.")
    result: dict[str, Any] | None = Field(
        default=None, description="Final evaluation and totals, once the job succeeded."
    )


class _Patch(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobList(BaseModel):
    """One page of jobs, newest first."""

    items: list[Job]
    total: int = Field(ge=0, description="Jobs matching the filter, over all pages.")
    limit: int
    offset: int


class WorkersPatch(_Patch):
    count: int = Field(ge=1, le=1024, description="The new target number of workers.")


class JobPatch(_Patch):
    """``PATCH /v1/jobs/{id}``: what may change while a job runs."""

    workers: WorkersPatch


LogSource = Literal["events", "workers"]
"""What ``GET /v1/jobs/{id}/logs`` returns: the job's events as lines, or what its
supervisor and workers wrote (their output and tracebacks)."""
LOG_SOURCES: tuple[LogSource, ...] = ("events", "workers")

EventKind = Literal["status", "checkpoint", "log", "resize", "worker", "eval", "skip"]


class JobEvent(BaseModel):
    """Something that happened to a job: a status change, a checkpoint, a log line (the
    summary at the end among them), a resize (``resize``), a worker lost or replaced
    (``worker``), an evaluation (``eval``: its step and metrics in ``data``), a step skipped
    under fp16 loss scaling (``skip``)."""

    seq: int = Field(description="Increases with every event of the server.")
    job_id: str
    time: datetime
    kind: EventKind
    status: JobStatus | None = None
    message: str
    data: dict[str, int | float | str | None] = Field(
        default_factory=dict,
        description="The event's facts, for programs (the message is for people): e.g. "
        "checkpoint_step, step, rank, slot, old and new sizes, state.",
    )


class MetricsPage(BaseModel):
    """A job's metric records from ``since`` on, possibly downsampled.

    Downsampling keeps the first and the last step record; each record's ``bytes_total``
    stays the exact running total, so totals and bytes curves are right either way."""

    job_id: str
    steps: list[StepMetrics]
    evals: list[EvalMetrics]
    downsampled: bool = Field(
        default=False, description="True when ``steps`` is an evenly spaced subset."
    )
    step_records: int | None = Field(
        default=None,
        ge=0,
        description="How many step records matched before downsampling (``len(steps)`` "
        "when not downsampled).",
    )


class CheckpointEntry(BaseModel):
    step: int
    path: str
    nbytes: int


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An error, as ``application/problem+json`` (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldProblem] | None = None
