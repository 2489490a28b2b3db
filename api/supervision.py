"""What a job's supervisor reports, typed: its states, its error kinds, its events.

The control plane (``sparsetrain.service``) and the Ray runtime (``sparsetrain.workers``) both
read a supervisor's reports, so the types live here, the one package both may import.
``next_action`` is the one reading of a supervisor's state: ``run_job`` and the service's
monitor both follow a supervisor with it.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class SupervisorState(str, Enum):
    """Where a job's supervisor is. ``succeeded``, ``failed`` and ``stopped`` are final."""

    CREATED = "created"
    RUNNING = "running"
    RESIZING = "resizing"
    """Training waits: fewer than ``workers.min`` workers are live."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_final(self) -> bool:
        return self in (SupervisorState.SUCCEEDED, SupervisorState.FAILED, SupervisorState.STOPPED)


class ErrorKind(str, Enum):
    """Why a supervisor failed."""

    SPEC = "SpecError"
    """The spec cannot run here: the cluster cannot place it, the data does not fit it."""
    TRAINING = "TrainingError"
    """A worker failed (the message names its rank and step)."""
    CHECKPOINT = "CheckpointError"
    """A checkpoint could not be written or read."""
    DATA = "DataError"
    """The job's data could not be read or parsed."""
    WORKERS_LOST = "WorkersLost"
    """Every worker is gone, and with them the parameters: a new supervisor can resume the
    job from its last checkpoint."""
    INTERNAL = "InternalError"
    """Anything else (the message names the exception; the traceback is in the log)."""

    @classmethod
    def read(cls, value: str | None) -> ErrorKind | None:
        """The kind a supervisor reported (None: it has not failed); a name this release
        does not know (an older supervisor's exception name) reads as ``INTERNAL``."""
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL


class NextAction(str, Enum):
    """What whoever follows a supervisor does after reading its state."""

    WAIT = "wait"
    """Still training: poll again."""
    COLLECT = "collect"
    """Succeeded: its metrics and results are final."""
    STOPPED = "stopped"
    """Stopped on request before the end."""
    RESTART = "restart"
    """Lost every worker: a new supervisor may resume from the last checkpoint."""
    FAIL = "fail"
    """Failed for good; its error says why."""


def next_action(state: SupervisorState, error_kind: ErrorKind | None) -> NextAction:
    """What to do about a supervisor in ``state`` that failed with ``error_kind`` (if any)."""
    if not state.is_final:
        return NextAction.WAIT
    if state is SupervisorState.SUCCEEDED:
        return NextAction.COLLECT
    if state is SupervisorState.STOPPED:
        return NextAction.STOPPED
    if error_kind is ErrorKind.WORKERS_LOST:
        return NextAction.RESTART
    return NextAction.FAIL


class SupervisorEventKind(str, Enum):
    """What a supervisor event is about (the control plane stores it under this kind)."""

    RESIZE = "resize"
    """The group's size or target changed, or training waits for workers (``data["state"]``
    then says the supervisor's new state)."""
    WORKER = "worker"
    """A worker was lost, replaced, or failed to start."""
    CHECKPOINT = "checkpoint"
    """A checkpoint was resumed from (``data["step"]``), or skipped because it does not
    load (``data["checkpoint"]`` names it). The control plane records the checkpoints
    written, with ``data["checkpoint_step"]``."""
    EVAL = "eval"
    """An evaluation: ``data`` holds its step and metrics (``EvalMetrics``' fields)."""
    SKIP = "skip"
    """A step no replica applied (precision fp16: some rank's gradient was not finite):
    ``data`` holds its step, the first overflowing rank, how many ranks overflowed and
    the loss scale the step was computed with."""


EventValue = int | float | str | None


class SupervisorEvent(BaseModel):
    """One thing a supervisor reports, as a record: nothing downstream parses ``message``.

    ``(epoch, seq)`` identifies it among all of its job's events: a replayed event has the
    same key, a genuine repeat (the same message again) a new ``seq``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int = Field(
        default=0, ge=0, description="Which launch of the job's supervisor (0: the first)."
    )
    seq: int = Field(ge=0, description="Counts this supervisor's events from 0.")
    kind: SupervisorEventKind
    message: str = Field(description="The event in words, for logs and people.")
    data: dict[str, EventValue] = Field(
        default_factory=dict,
        description="The event's facts: e.g. step, checkpoint_step, rank, slot, old, new, state.",
    )
