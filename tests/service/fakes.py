"""A launcher that runs no training: jobs advance a few steps per poll, deterministically."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.service.launcher import JobProgress
from sparsetrain.spec import JobSpec


@dataclass
class FakeJob:
    total: int
    step: int = 0
    state: str = "running"
    error: str | None = None


@dataclass
class FakeLauncher:
    """Each ``poll`` advances a job by ``steps_per_poll``; ``fail`` makes its next poll fail."""

    steps_per_poll: int = 4
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    broken_checkpoints: bool = False

    def start(self) -> str | None:
        return None

    def ready(self) -> bool:
        return True

    def submit(self, job_id: str, spec: JobSpec) -> None:
        self.jobs.setdefault(job_id, FakeJob(total=spec.steps or 10))

    def fail(self, job_id: str, message: str) -> None:
        self.jobs[job_id].state, self.jobs[job_id].error = "failed", message

    def lose(self, job_id: str) -> None:
        del self.jobs[job_id]

    def poll(self, job_id: str, since: int) -> JobProgress | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.state == "running":
            job.step = min(job.total, job.step + self.steps_per_poll)
            if job.step == job.total:
                job.state = "succeeded"
        steps = [_record(step) for step in range(since, job.step)]
        evals = [EvalMetrics(step=job.total, train_loss=0.5, train_accuracy=0.9)]
        return JobProgress(
            state=job.state,
            step=job.step,
            total_steps=job.total,
            error=job.error,
            steps=steps,
            evals=evals if job.state == "succeeded" else [],
            checkpoints=[
                {"step": step, "path": f"/ckpt/{job_id}/{step}", "nbytes": 1}
                for step in range(4, job.step + 1, 4)
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

    def shutdown(self) -> None:
        pass


def _record(step: int) -> StepMetrics:
    return StepMetrics(
        step=step,
        loss=1.0 / (step + 1),
        lr=0.1,
        bytes_sent=200,
        bytes_per_worker=[100, 100],
        density=0.01,
        compute_s=0.001,
        compress_s=0.001,
        exchange_s=0.001,
    )
