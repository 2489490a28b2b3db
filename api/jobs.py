"""What the control plane returns: jobs, pages of jobs, events, errors (problem+json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus


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


EventKind = Literal["status", "checkpoint", "log", "resize", "worker"]


class JobEvent(BaseModel):
    """Something that happened to a job: a status change, a checkpoint, a log line, a
    resize (``resize``), a worker lost or replaced (``worker``)."""

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
