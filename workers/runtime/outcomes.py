"""What the training loops report to the supervisor, and what it tells them.

The loops (``sync_loop``, ``async_loop``) never call the supervisor: each of their calls
returns what happened, as a list of ``Happening`` records (a step's metrics, an evaluation,
a membership change, a note for the event log) beside its result, and the supervisor
decides what follows (records, events, state changes, checkpoints, failing the job). The one
thing a loop reads from the supervisor while it runs is its ``Steering``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.supervision import EventValue, SupervisorEventKind
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.step import RankStats


@dataclass
class Steering:
    """The size a job should train at and whether it should stop. The supervisor writes it
    (``scale``, ``stop``, autoscaling); the loops only read it, at step boundaries and while
    they wait."""

    target: int
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stopping(self) -> bool:
        return self.stop.is_set()

    def retarget(self, count: int) -> int:
        """Set the target to ``count``; returns the old one."""
        with self._lock:
            old, self.target = self.target, count
        return old


@dataclass(frozen=True)
class StepDone:
    """A step's (or an async round's) metrics and the per-rank stats they were made of."""

    metrics: StepMetrics
    ranks: list[RankStats]


@dataclass(frozen=True)
class Evaluated:
    metrics: EvalMetrics


@dataclass(frozen=True)
class MembersChanged:
    """The group changed (``change``); ``message`` and ``data`` describe it for the event
    log (an event of kind ``worker`` when a worker was lost, else ``resize``)."""

    change: Change
    message: str
    data: dict[str, EventValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """Something for the event log that changes neither the group nor the metrics (a worker
    that failed to start, an async worker replaced in place)."""

    kind: SupervisorEventKind
    message: str
    data: dict[str, EventValue] = field(default_factory=dict)


Happening = StepDone | Evaluated | MembersChanged | Note


def skipped_note(metrics: StepMetrics, ranks: list[RankStats]) -> Note:
    """The event of a step every replica skipped (fp16 loss scaling: a rank's gradient was
    not finite): which step, which ranks overflowed, the scale it was computed with."""
    overflowed = [stats.rank for stats in ranks if stats.skipped]
    scale = metrics.loss_scale
    return Note(
        SupervisorEventKind.SKIP,
        f"step {metrics.step} skipped: the gradient of worker(s) "
        f"{', '.join(map(str, overflowed))} was not finite at loss scale {scale}; "
        "no replica applied it and the loss scale backs off",
        {
            "step": metrics.step,
            "rank": overflowed[0] if overflowed else None,
            "ranks": len(overflowed),
            "loss_scale": scale,
        },
    )


@dataclass
class BelowMin:
    """Too few workers can train step ``step``: ``live`` (with the built joiners) of at least
    ``min_count``; the group waits up to ``wait_s`` for replacements."""

    step: int
    live: int
    min_count: int
    wait_s: float


@dataclass
class Boundary:
    """What a step boundary found: the members that flush in the next step and leave after
    it, what happened on the way, and (``below_min``) that too few workers can train the
    step: then nothing was admitted and no leaver picked."""

    leavers: list[Any]
    happened: list[Happening] = field(default_factory=list)
    below_min: BelowMin | None = None


@dataclass
class StepOutcome:
    """One synchronous step: what happened, and how many members survived it (0: every
    worker was lost, and with them the parameters)."""

    happened: list[Happening]
    survivors: int
    world: int


@dataclass
class CheckpointState:
    """What a checkpoint of boundary ``done`` holds: each live rank's snapshot (numbered by
    place) and the replicas' parameters; with what happened while it was taken (workers
    dropped because their last updates could not be read)."""

    done: int
    snapshots: list[dict[str, Any]]
    params: Any
    happened: list[Happening] = field(default_factory=list)


@dataclass
class Finished:
    """The end of a synchronous run: the final evaluation, the final parameters, the
    last checkpoint's state and what happened on the way (workers found dead at the end)."""

    evaluation: EvalMetrics
    state: CheckpointState
    happened: list[Happening] = field(default_factory=list)


@dataclass
class RoundOutcome:
    """One asynchronous round (W applied updates), or less of one when the job was asked to
    stop (``stopped``)."""

    happened: list[Happening]
    stopped: bool = False
