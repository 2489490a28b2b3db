"""Job lifecycle: the statuses and which transitions are legal."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """Where a job is in its life. Terminal statuses never change.

    RESIZING: training waits for workers (fewer than ``workers.min`` are live).
    RECOVERING: the supervisor was lost and is being relaunched from the last checkpoint.
    """

    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RESIZING = "RESIZING"
    RECOVERING = "RECOVERING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def can_become(self, other: JobStatus) -> bool:
        """True when ``self -> other`` is a legal transition."""
        return other in TRANSITIONS[self]


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

_ENDINGS = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
_LIVE = frozenset({JobStatus.RUNNING, JobStatus.RESIZING, JobStatus.RECOVERING})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.STARTING, *_ENDINGS}),
    JobStatus.STARTING: _LIVE | _ENDINGS,
    JobStatus.RUNNING: (_LIVE - {JobStatus.RUNNING}) | _ENDINGS | {JobStatus.SUCCEEDED},
    JobStatus.RESIZING: (_LIVE - {JobStatus.RESIZING}) | _ENDINGS | {JobStatus.SUCCEEDED},
    JobStatus.RECOVERING: (_LIVE - {JobStatus.RECOVERING}) | _ENDINGS,
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
