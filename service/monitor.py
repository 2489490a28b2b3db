"""Keeps the job store in step with the cluster: submits, follows, reconciles.

One pass (``tick``) looks at every job that is not terminal: a PENDING job is submitted; a
live job's supervisor is polled, its new metrics and events stored, and its status moved on
(RUNNING, RESIZING while it waits for workers) as ``next_action`` reads its state. A job
whose supervisor is gone, or lost every worker, is RECOVERING: a new supervisor resumes it
from its newest checkpoint (the metrics after that step are recorded again), up to
``max_restarts`` times, then it is FAILED with the reason. The first pass after a restart is
the reconciliation: supervisors that outlived the previous control plane are re-attached and
their buffered metrics backfilled from the last stored step. Supervisor events are stored
by their (epoch, seq) key, so a replay is stored once; nothing here reads a message's text.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sparsetrain.jobs import Job
from sparsetrain.service.job_summary import summary_line
from sparsetrain.service.launcher import JobProgress, Launcher
from sparsetrain.service.store import IllegalTransition, JobStore
from sparsetrain.status import JobStatus
from sparsetrain.supervision import NextAction, SupervisorState, next_action

log = logging.getLogger("sparsetrain.monitor")

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
                self.launcher.submit(job.id, job.spec, job.target_workers)
            except Exception as error:
                self._move(job.id, JobStatus.FAILED, "could not start", error=_line(error))
                return
            try:
                self.store.transition(job.id, JobStatus.STARTING, "supervisor started")
            except IllegalTransition:
                self.launcher.cancel(job.id)  # cancelled while it was being started
                raise
            return
        recovering = job.status is JobStatus.RECOVERING
        last = self.store.last_metric_step(job.id)
        since = 0 if recovering or last is None else last + 1
        progress = self.launcher.poll(job.id, since=since)
        if progress is None:
            self._recover(job, GONE)
            return
        if recovering:
            if progress.first_step is None:
                return  # still loading its checkpoint
            self.store.truncate_metrics(job.id, progress.first_step)
        self._record(job, progress)
        action = next_action(progress.state, progress.error_kind)
        if action is NextAction.RESTART:
            self._recover(job, progress.error or "every worker was lost")
            return
        job = self._follow(job, progress)
        if action is NextAction.COLLECT:
            self.store.transition(
                job.id, JobStatus.SUCCEEDED, "finished", result=_summary(progress, self.store, job)
            )
        elif action is NextAction.FAIL:
            self._move(job.id, JobStatus.FAILED, "training failed", error=progress.error)
        elif action is NextAction.STOPPED:
            self._move(job.id, JobStatus.CANCELLED, "stopped")
        if action in (NextAction.COLLECT, NextAction.FAIL, NextAction.STOPPED):
            self.launcher.release(job.id)
            self._close(job.id)

    def _follow(self, job: Job, progress: JobProgress) -> Job:
        """Move a live job between STARTING, RUNNING, RESIZING and RECOVERING as its
        supervisor reports."""
        status, state = job.status, progress.state
        running, resizing = SupervisorState.RUNNING, SupervisorState.RESIZING
        if status is JobStatus.STARTING and (progress.step > 0 or state is not running):
            return self.store.transition(job.id, JobStatus.RUNNING, "training started")
        if status is JobStatus.RECOVERING and state is not resizing:
            return self.store.transition(
                job.id, JobStatus.RUNNING, f"recovered: training from step {progress.first_step}"
            )
        if state is resizing and status is not JobStatus.RESIZING:
            return self.store.transition(job.id, JobStatus.RESIZING, "waiting for workers")
        if state is running and status is JobStatus.RESIZING:
            return self.store.transition(job.id, JobStatus.RUNNING, "enough workers again")
        return job

    def _recover(self, job: Job, reason: str) -> None:
        """Relaunch a lost supervisor from the newest checkpoint, or fail the job once it has
        used ``max_restarts``."""
        self._checkpoints_seen.pop(job.id, None)
        if job.restarts >= job.spec.max_restarts:
            limit = job.spec.max_restarts
            self._move(
                job.id,
                JobStatus.FAILED,
                "supervisor lost",
                error=f"{reason}; gave up after {limit} restart(s) (max_restarts={limit})",
            )
            self.launcher.release(job.id)
            self._close(job.id)
            return
        if job.status is not JobStatus.RECOVERING:
            self.store.transition(job.id, JobStatus.RECOVERING, reason)
        restarts = self.store.count_restart(job.id)
        try:
            step = self.launcher.relaunch(job.id, job.spec, job.target_workers, epoch=restarts)
        except Exception as error:
            self._move(job.id, JobStatus.FAILED, "could not relaunch", error=_line(error))
            return
        # The new supervisor reports the checkpoint it resumed from, and any it skipped.
        where = "the start" if step is None else "the newest checkpoint that loads"
        self.store.add_event(
            job.id,
            "log",
            f"supervisor relaunched (restart {restarts} of at most {job.spec.max_restarts}); "
            f"it resumes from {where}",
        )

    def _record(self, job: Job, progress: JobProgress) -> None:
        if progress.steps or progress.evals:
            self.store.add_metrics(job.id, progress.steps, progress.evals)
        self.store.set_progress(
            job.id,
            progress.step,
            progress.total_steps,
            progress.workers,
            progress.worker_details,
        )
        self._record_checkpoints(job, progress)
        self._record_events(job, progress)

    def _record_events(self, job: Job, progress: JobProgress) -> None:
        """Store the supervisor's events not stored yet (the store skips replays by key)."""
        self.store.add_supervisor_events(job.id, progress.events)

    def _record_checkpoints(self, job: Job, progress: JobProgress) -> None:
        seen = self._checkpoints_seen.get(job.id)
        if seen is None:  # first look since this process started: what is already recorded
            seen = max(
                (
                    step
                    for event in self.store.events(job.id, 0, limit=100_000)
                    if event.kind == "checkpoint"
                    and isinstance(step := event.data.get("checkpoint_step"), int)
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
                    data={
                        "checkpoint_step": checkpoint["step"],
                        "nbytes": checkpoint["nbytes"],
                    },
                )
                seen = checkpoint["step"]
        self._checkpoints_seen[job.id] = seen

    def _close(self, job_id: str) -> None:
        """End an ended job's log with its summary line (a ``log`` event with its facts)."""
        job = self.store.get_job(job_id)
        if job.status.is_terminal:
            message, facts = summary_line(job, self.store.metrics(job_id, max_points=1))
            self.store.add_event(job_id, "log", message, data=facts)

    def _move(self, job_id: str, to: JobStatus, reason: str, *, error: str | None = None) -> None:
        """Move the job to ``to``; the status event says ``reason`` and the ``error``."""
        message = f"{reason}: {error}" if error else reason
        with contextlib.suppress(IllegalTransition):  # a cancel got there first; it stands
            self.store.transition(job_id, to, message, error=error)


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
