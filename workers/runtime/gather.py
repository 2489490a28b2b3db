"""Collecting the workers' results: the one place a rank's failure becomes a typed error."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from sparsetrain.errors import TrainingError


class WorkerDiedError(TrainingError):
    """A worker's actor died (its process was killed or crashed) while computing;
    ``cause`` names the Ray error that said so."""

    def __init__(
        self, message: str, step: int | None = None, rank: int | None = None, cause: str = ""
    ) -> None:
        super().__init__(message, step=step, rank=rank)
        self.cause = cause


class InputsLostError(WorkerDiedError):
    """A worker's call could not read one of its inputs: every copy of the object is gone
    (the node that held it died, or its owner did), so the call ran none of its code and
    left the worker as it was. ``objects`` are the hex ids of the unreadable objects. A
    caller that does not look further treats the rank as lost."""

    def __init__(
        self,
        message: str,
        objects: Sequence[str],
        step: int | None = None,
        rank: int | None = None,
        cause: str = "",
    ) -> None:
        super().__init__(message, step=step, rank=rank, cause=cause)
        self.objects = tuple(objects)


class StepDeadlineError(WorkerDiedError):
    """A worker had not answered a step ``deadline_s`` after the first rank did, while every
    rank that had answered still answered a probe: it is treated as lost (its process may
    be alive but stalled, or cut off from the others)."""


PROBE_ROUNDS = 8
"""At most this many extra deadlines are waited for a late rank while its peers are found
dead or do not answer a probe (it is likely reading a dead peer's update)."""


class WorkersLostError(TrainingError):
    """Every worker of the group is gone, and with them the parameters: only a restart from
    the last checkpoint can continue the job."""


def gather(
    refs: Sequence[Any],
    step: int | None,
    ranks: Sequence[int] | None = None,
    *,
    deadline_s: float | None = None,
    unbounded: Collection[int] = (),
    probes: Sequence[Callable[[], Any]] | None = None,
) -> list[Any]:
    """``ray.get`` each reference in order; ``ranks`` names the rank behind each (default
    0, 1, ...). A dead worker's result is a ``WorkerDiedError`` in its place, and a call
    that could not read an input an ``InputsLostError``; a worker's own exception is raised
    as its ``TrainingError``, naming its rank and ``step``.

    With ``deadline_s``, a rank that has not answered ``deadline_s`` after the first answer
    gets a ``StepDeadlineError`` in its place, except the ranks in ``unbounded`` (one doing
    extra work, such as an evaluation), which are waited for as without a deadline.
    ``probes`` (one per reference, each sending a cheap call to that rank's actor) make the
    deadline fair to a rank that waits on a dead peer: see ``unanswered``."""
    order = list(ranks if ranks is not None else range(len(refs)))
    late: set[int] = set()
    if deadline_s is not None:
        bounded = {
            rank: ref for rank, ref in zip(order, refs, strict=True) if rank not in unbounded
        }
        pending = unanswered(refs, list(bounded.values()), deadline_s, probes)
        late = {rank for rank, ref in bounded.items() if ref in pending}
    results: list[Any] = []
    for rank, ref in zip(order, refs, strict=True):
        if rank in late:
            message = f"worker {rank} did not answer step {step} within {deadline_s:g} s"
            cause = f"no answer {deadline_s:g} s after the first rank's"
            results.append(StepDeadlineError(message, step=step, rank=rank, cause=cause))
            continue
        try:
            results.append(ray.get(ref))
        except RayTaskError as error:
            lost = lost_objects(error)
            if not lost:
                raise task_error(error, rank, step) from None
            cause = type(lost[0]).__name__
            message = f"worker {rank} could not read its inputs ({cause})"
            objects = [e.object_ref_hex for e in lost]
            results.append(InputsLostError(message, objects, step=step, rank=rank, cause=cause))
        except (RayActorError, ObjectLostError) as error:  # the call's own result is gone
            cause = type(error).__name__
            message = f"worker {rank} died ({cause})"
            results.append(WorkerDiedError(message, step=step, rank=rank, cause=cause))
    return results


def unanswered(
    refs: Sequence[Any],
    bounded: Sequence[Any],
    deadline_s: float,
    probes: Sequence[Callable[[], Any]] | None = None,
) -> list[Any]:
    """The references of ``bounded`` (a subset of ``refs``) still pending ``deadline_s``
    after the first of ``refs`` is ready (a failure counts as an answer). Blocks until then,
    or until every one of ``bounded`` is ready.

    With ``probes`` (aligned with ``refs``), a late rank is only called late once every
    rank that answered also answers a probe: a rank that reads a peer's update blocks until
    Ray has noticed that the peer's node is gone, which can take longer than the deadline.
    While a probed rank is found dead or does not answer within ``deadline_s``, the late
    ranks get another ``deadline_s`` (at most ``PROBE_ROUNDS`` times)."""
    if not bounded:
        return []
    ray.wait(list(refs), num_returns=1)
    pending = _still_pending(list(bounded), deadline_s)
    if probes is None:
        return pending
    dead: set[int] = set()
    for _ in range(PROBE_ROUNDS):
        if not pending:
            break
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        answered = [i for i, ref in enumerate(refs) if ref in ready and i not in dead]
        found = _probe([probes[i] for i in answered], deadline_s)
        dead |= {i for i, ok in zip(answered, found, strict=True) if ok is False}
        if all(found):
            return _still_pending(pending, 0.0)
        pending = _still_pending(pending, deadline_s)
    return pending


def _still_pending(refs: list[Any], wait_s: float) -> list[Any]:
    """Those of ``refs`` not ready after waiting at most ``wait_s`` for all of them."""
    pending, until = refs, time.monotonic() + wait_s
    while pending:
        left = max(until - time.monotonic(), 0.0)
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=left)
        if left == 0.0:
            break
    return pending


def _probe(probes: Sequence[Callable[[], Any]], timeout_s: float) -> list[bool | None]:
    """Send every probe and wait at most ``timeout_s`` for them: per probe, True (its actor
    answered), False (it is dead) or None (no answer yet)."""
    refs = [probe() for probe in probes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    found: list[bool | None] = []
    for ref in refs:
        if ref not in ready:
            found.append(None)
            continue
        try:
            ray.get(ref)
            found.append(True)
        except (RayActorError, ObjectLostError, RayTaskError):
            found.append(False)
    return found


def lost_objects(error: BaseException) -> list[ObjectLostError]:
    """The ``ObjectLostError`` (or subclass: reconstruction failed, owner died, ...) behind
    a task's failure, following ``RayTaskError.cause`` through tasks that passed it on (an
    input of an input); empty when the task failed for another reason."""
    found: list[ObjectLostError] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ObjectLostError) and hasattr(current, "object_ref_hex"):
            found.append(current)
        cause = getattr(current, "cause", None) if isinstance(current, RayTaskError) else None
        current = cause if isinstance(cause, BaseException) else None
    return found[-1:]  # the innermost one names the object that is gone


def task_error(error: RayTaskError, rank: int, step: int | None) -> TrainingError:
    """The ``TrainingError`` a worker raised, or one naming its rank and exception."""
    cause = error.cause if error.cause is not None else error
    if isinstance(cause, TrainingError):
        return cause
    return TrainingError(
        f"worker {rank} failed: {type(cause).__name__}: {cause}", step=step, rank=rank
    )
