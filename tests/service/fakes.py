"""A launcher that runs no training: jobs advance a few steps per poll, deterministically."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sparsetrain.jobs import WorkerInfo
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.service.launcher import JobProgress
from sparsetrain.spec import JobSpec
from sparsetrain.supervision import (
    ErrorKind,
    SupervisorEvent,
    SupervisorEventKind,
    SupervisorState,
)

FAKE_NODE_ID = "0f" * 28  # a Ray node id is 56 hex digits


@dataclass
class FakeJob:
    total: int
    step: int = 0
    state: SupervisorState = SupervisorState.RUNNING
    error: str | None = None
    error_kind: ErrorKind | None = None
    first_step: int = 0
    workers: int = 2
    epoch: int = 0
    events: list[SupervisorEvent] = field(default_factory=list)

    def event(self, kind: str, message: str, **data: int | str) -> None:
        """Report an event as a supervisor does: numbered after the last one."""
        self.events.append(
            SupervisorEvent(
                epoch=self.epoch,
                seq=len(self.events),
                kind=SupervisorEventKind(kind),
                message=message,
                data=dict(data),
            )
        )


@dataclass
class FakeLauncher:
    """Each ``poll`` advances a job by ``steps_per_poll``; ``fail`` makes its next poll fail."""

    steps_per_poll: int = 4
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # jobs whose files were deleted
    broken_checkpoints: bool = False
    relaunched: list[tuple[str, int | None]] = field(default_factory=list)
    scaled: list[tuple[str, int]] = field(default_factory=list)
    checkpoint_step: int | None = 4
    skipped_step: int | None = None  # a newer checkpoint the relaunch finds truncated
    logs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # log files by job

    def start(self) -> str | None:
        return None

    def ready(self) -> bool:
        return True

    def submit(self, job_id: str, spec: JobSpec, target: int | None = None) -> None:
        workers = target or spec.workers.count
        self.jobs.setdefault(job_id, FakeJob(total=spec.steps or 10, workers=workers))

    def relaunch(
        self, job_id: str, spec: JobSpec, target: int | None = None, epoch: int = 0
    ) -> int | None:
        """Resume from ``checkpoint_step`` (None: from the start), reporting as a supervisor
        does the checkpoint used and ``skipped_step``'s, which did not load; returns the
        newest checkpoint's step on storage, as ``RayLauncher`` does."""
        self.relaunched.append((job_id, target))
        step = self.checkpoint_step
        job = FakeJob(
            total=spec.steps or 10,
            step=step or 0,
            first_step=step or 0,
            workers=target or 2,
            epoch=epoch,
        )
        self.jobs[job_id] = job
        if self.skipped_step is not None:
            name = f"step-{self.skipped_step:010d}.ckpt"
            job.event("checkpoint", f"skipped checkpoint {name}: truncated", checkpoint=name)
        if step is not None:
            name = f"step-{step:010d}.ckpt"
            message = f"resumed from checkpoint {name} (step {step})"
            job.event("checkpoint", message, checkpoint=name, step=step)
        return self.skipped_step if self.skipped_step is not None else step

    def scale(self, job_id: str, count: int) -> bool:
        self.scaled.append((job_id, count))
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.event("resize", f"resized to {count}", new=count)
        job.workers = count
        return True

    def fail(self, job_id: str, message: str, kind: str = "TrainingError") -> None:
        job = self.jobs[job_id]
        job.state, job.error, job.error_kind = SupervisorState.FAILED, message, ErrorKind(kind)

    def lose(self, job_id: str) -> None:
        del self.jobs[job_id]

    def poll(self, job_id: str, since: int) -> JobProgress | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.state is SupervisorState.RUNNING:
            job.step = min(job.total, job.step + self.steps_per_poll)
            if job.step == job.total:
                job.state = SupervisorState.SUCCEEDED
        steps = [_record(step) for step in range(max(since, job.first_step), job.step)]
        evals = [EvalMetrics(step=job.total, train_loss=0.5, train_accuracy=0.9)]
        return JobProgress(
            state=job.state,
            step=job.step,
            total_steps=job.total,
            error=job.error,
            steps=steps,
            evals=evals if job.state is SupervisorState.SUCCEEDED else [],
            checkpoints=[
                {"step": step, "path": f"/ckpt/{job_id}/{step}", "nbytes": 1}
                for step in range(4, job.step + 1, 4)
            ],
            workers=job.workers,
            first_step=job.first_step,
            error_kind=job.error_kind,
            events=list(job.events),
            worker_details=[
                WorkerInfo(
                    rank=rank,
                    slot=rank,
                    name=f"job-{job_id}-worker-{rank}",
                    state="training",
                    node_id=FAKE_NODE_ID,
                    node_ip="10.0.0.7",
                    actor_id=f"{rank:032x}",
                    pid=1000 + rank,
                    last_step=job.step - 1 if job.step else None,
                )
                for rank in range(job.workers)
            ],
        )

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.jobs.pop(job_id, None)

    def release(self, job_id: str) -> None:
        self.released.append(job_id)
        self.jobs.pop(job_id, None)

    def checkpoints(self, job_id: str, spec: JobSpec) -> list[dict[str, Any]]:
        if self.broken_checkpoints:
            raise RuntimeError("storage exploded at /secret/internal/path")
        return [{"step": 10, "path": f"/ckpt/{job_id}/step-0000000010.ckpt", "nbytes": 123}]

    def model_path(self, job_id: str, spec: JobSpec) -> str | None:
        return None

    def samples_path(self, job_id: str, spec: JobSpec) -> str | None:
        return None

    def delete_artifacts(self, job_id: str, spec: JobSpec) -> None:
        self.deleted.append(job_id)

    def worker_logs(self, job_id: str) -> list[tuple[str, str]]:
        """``logs[job_id]``, else one worker's line."""
        return self.logs.get(job_id, [("worker-0.log", "hello from rank 0\n")])

    def shutdown(self) -> None:
        pass


def _record(step: int) -> StepMetrics:
    return StepMetrics(
        step=step,
        loss=1.0 / (step + 1),
        lr=0.1,
        bytes_sent=200,
        bytes_total=200 * (step + 1),
        bytes_per_worker=[100, 100],
        density=0.01,
        compute_s=0.001,
        compress_s=0.001,
        exchange_s=0.001,
    )
