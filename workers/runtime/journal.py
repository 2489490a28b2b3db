"""A supervisor's records: its state, step and eval metrics, events, membership changes and
checkpoints. The training thread writes them, the actor's calls read them: every method
takes the journal's lock."""

from __future__ import annotations

import threading
from typing import Any

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.supervision import (
    ErrorKind,
    EventValue,
    SupervisorEvent,
    SupervisorEventKind,
    SupervisorState,
)
from sparsetrain.workers.training.elastic import Change


class Journal:
    """What supervisor launch ``epoch`` of a job has to report. Events are numbered from 0
    (``seq``) and stamped with ``epoch``, so the control plane can tell a replayed event from
    a genuine repeat."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.state = SupervisorState.CREATED
        self.error: str | None = None
        self.error_kind: ErrorKind | None = None
        self.steps: list[StepMetrics] = []
        self.evals: list[EvalMetrics] = []
        self.events: list[SupervisorEvent] = []
        self.changes: list[Change] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.first_step = 0  # a resumed job's first step
        self.started_from: int | None = None  # the same, once known
        self.bytes_total: int | None = 0  # bytes sent so far (None: a resume lost count)
        self._lock = threading.Lock()

    # ---- writes (the training thread) -------------------------------------------------------
    def set_state(self, state: SupervisorState) -> None:
        with self._lock:
            self.state = state

    def fail(self, kind: ErrorKind, message: str) -> None:
        """Mark the job failed with ``kind`` and the one-line ``message``."""
        with self._lock:
            self.state = SupervisorState.FAILED
            self.error_kind = kind
            self.error = message

    def event(
        self,
        kind: SupervisorEventKind,
        message: str,
        data: dict[str, EventValue] | None = None,
    ) -> None:
        """Append an event, numbered after the last one."""
        with self._lock:
            self.events.append(
                SupervisorEvent(
                    epoch=self.epoch,
                    seq=len(self.events),
                    kind=kind,
                    message=message,
                    data=data or {},
                )
            )

    def change(self, change: Change, message: str, data: dict[str, EventValue]) -> None:
        """Record a membership change and its event (``worker`` for a lost worker, else
        ``resize``)."""
        with self._lock:
            self.changes.append(change)
        lost = change.kind == "lost"
        kind = SupervisorEventKind.WORKER if lost else SupervisorEventKind.RESIZE
        self.event(kind, message, {"change": change.kind, **data})

    def record_step(self, metrics: StepMetrics) -> None:
        """Keep a step's metrics, with the run's bytes so far set on them (mutates
        ``metrics.bytes_total``)."""
        with self._lock:
            if self.bytes_total is not None:
                self.bytes_total += metrics.bytes_sent
                metrics.bytes_total = self.bytes_total
            self.steps.append(metrics)

    def record_eval(self, metrics: EvalMetrics) -> None:
        with self._lock:
            self.evals.append(metrics)

    def record_checkpoint(self, step: int, path: str, nbytes: int) -> None:
        with self._lock:
            self.checkpoints.append({"step": step, "path": path, "nbytes": nbytes})

    def resumed_at(self, step: int, bytes_total: int | None) -> None:
        """The job resumes at ``step`` with ``bytes_total`` sent before (None: unknown)."""
        with self._lock:
            self.first_step = step
            self.bytes_total = bytes_total

    def started_at(self, step: int) -> None:
        with self._lock:
            self.started_from = step

    # ---- reads (the actor's calls) -----------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """State, steps done, the first step, and the error if the job failed."""
        with self._lock:
            return {
                "state": self.state,
                "step": self.first_step + len(self.steps),
                "first_step": self.started_from,
                "error": self.error,
                "error_kind": self.error_kind,
            }

    def last_step(self) -> int | None:
        """The step of the newest step record; None before the first."""
        with self._lock:
            return self.steps[-1].step if self.steps else None

    def metrics(self, since: int = 0) -> dict[str, list[dict[str, Any]]]:
        """Step records with step >= ``since`` and every evaluation at step >= ``since``."""
        with self._lock:
            first = max(0, since - self.first_step)  # records are consecutive steps
            return {
                "steps": [m.model_dump() for m in self.steps[first:]],
                "evals": [e.model_dump() for e in self.evals if e.step >= since],
            }

    def event_log(self, since: int = 0) -> list[dict[str, Any]]:
        """Events with ``seq >= since``, as JSON-ready dicts."""
        with self._lock:
            return [event.model_dump(mode="json") for event in self.events[since:]]

    def membership(self) -> list[dict[str, Any]]:
        with self._lock:
            return [change.as_dict() for change in self.changes]

    def checkpoint_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.checkpoints)
