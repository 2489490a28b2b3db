"""Keeps the job store in step with the cluster: submits, follows, reconciles.

One pass (``tick``) looks at every job that is not terminal: a PENDING job is submitted; a
STARTING or RUNNING job's supervisor is polled, its new metrics stored in one batch, and its
status moved on. A job whose supervisor is gone is marked FAILED with the reason. The first
pass after a restart is the reconciliation: supervisors that outlived the previous control
plane are re-attached and their buffered metrics backfilled from the last stored step.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from sparsetrain.jobs import Job
from sparsetrain.service.launcher import JobProgress, Launcher
from sparsetrain.service.store import IllegalTransition, JobStore
from sparsetrain.status import JobStatus

log = logging.getLogger("sparsetrain.monitor")

_CHECKPOINT_STEP = re.compile(r"checkpoint at step (\d+):")
GONE = "the job's supervisor is gone (its node or the Ray cluster was lost)"


class Monitor:
    """Moves jobs through their lifecycle from what the launcher reports."""

    def __init__(self, store: JobStore, launcher: Launcher) -> None:
        self.store = store
        self.launcher = launcher
        self._checkpoints_seen: dict[str, int] = {}

    def tick(self) -> None:
        """One pass over every active job. Blocking; run it off the event loop."""
        for job in self.store.active_jobs():
            try:
                self._advance(job)
            except IllegalTransition:
                pass  # someone else (a cancel) moved the job on first; theirs stands
            except Exception as error:  # one broken job must not stop the others
                log.exception("monitor: job %s", job.id)
                self._move(job.id, JobStatus.FAILED, "internal error", error=_line(error))

    def _advance(self, job: Job) -> None:
        if job.status is JobStatus.PENDING:
            try:
                self.launcher.submit(job.id, job.spec)
            except Exception as error:
                self._move(job.id, JobStatus.FAILED, "could not start", error=_line(error))
                return
            try:
                self.store.transition(job.id, JobStatus.STARTING, "supervisor started")
            except IllegalTransition:
                self.launcher.cancel(job.id)  # cancelled while it was being started
                raise
            return
        last = self.store.last_metric_step(job.id)
        progress = self.launcher.poll(job.id, since=0 if last is None else last + 1)
        if progress is None:
            self._move(job.id, JobStatus.FAILED, "supervisor lost", error=GONE)
            return
        self._record(job, progress)
        if job.status is JobStatus.STARTING and (progress.step > 0 or progress.state != "running"):
            job = self.store.transition(job.id, JobStatus.RUNNING, "training started")
        if progress.state == "succeeded":
            self.store.transition(
                job.id, JobStatus.SUCCEEDED, "finished", result=_summary(progress, self.store, job)
            )
            self.launcher.release(job.id)
        elif progress.state == "failed":
            self._move(job.id, JobStatus.FAILED, "training failed", error=progress.error)
            self.launcher.release(job.id)
        elif progress.state == "stopped":
            self._move(job.id, JobStatus.CANCELLED, "stopped")
            self.launcher.release(job.id)

    def _record(self, job: Job, progress: JobProgress) -> None:
        if progress.steps or progress.evals:
            self.store.add_metrics(job.id, progress.steps, progress.evals)
        self.store.set_progress(job.id, progress.step, progress.total_steps)
        seen = self._checkpoints_seen.get(job.id)
        if seen is None:  # first look since this process started: what is already recorded
            seen = max(
                (
                    int(match.group(1))
                    for event in self.store.events(job.id, 0, limit=100_000)
                    if event.kind == "checkpoint"
                    and (match := _CHECKPOINT_STEP.match(event.message)) is not None
                ),
                default=-1,
            )
        for checkpoint in progress.checkpoints:
            if checkpoint["step"] > seen:
                self.store.add_event(
                    job.id,
                    "checkpoint",
                    f"checkpoint at step {checkpoint['step']}: {checkpoint['path']} "
                    f"({checkpoint['nbytes']} bytes)",
                )
                seen = checkpoint["step"]
        self._checkpoints_seen[job.id] = seen

    def _move(self, job_id: str, to: JobStatus, reason: str, *, error: str | None = None) -> None:
        with contextlib.suppress(IllegalTransition):  # a cancel got there first; it stands
            self.store.transition(job_id, to, reason, error=error)


def _line(error: BaseException) -> str:
    """An error as one line a user can read (no traceback)."""
    text = str(error).strip().splitlines()
    return text[0][:500] if text else type(error).__name__


def _summary(progress: JobProgress, store: JobStore, job: Job) -> dict[str, Any]:
    """The result a succeeded job reports: steps, final evaluation, total bytes sent."""
    page = store.metrics(job.id)
    return {
        "steps": progress.step,
        "final": page.evals[-1].model_dump() if page.evals else None,
        "bytes_sent": sum(record.bytes_sent for record in page.steps),
    }
