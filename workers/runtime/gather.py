"""Collecting the workers' results: the one place a rank's failure becomes a typed error."""

from __future__ import annotations

from collections.abc import Sequence
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


class WorkersLostError(TrainingError):
    """Every worker of the group is gone, and with them the parameters: only a restart from
    the last checkpoint can continue the job."""


def gather(refs: Sequence[Any], step: int | None, ranks: Sequence[int] | None = None) -> list[Any]:
    """``ray.get`` each reference in order; ``ranks`` names the rank behind each (default
    0, 1, ...). A dead worker's result is a ``WorkerDiedError`` in its place, and a call
    that could not read an input an ``InputsLostError``; a worker's own exception is raised
    as its ``TrainingError``, naming its rank and ``step``."""
    results: list[Any] = []
    for rank, ref in zip(ranks if ranks is not None else range(len(refs)), refs, strict=True):
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
