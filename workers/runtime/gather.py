"""Collecting the workers' results: the one place a rank's failure becomes a typed error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from sparsetrain.errors import TrainingError


class WorkerDiedError(TrainingError):
    """A worker's actor died (its process was killed or crashed) while computing;
    ``cause`` names the Ray error that said so."""

    def __init__(
        self, message: str, step: int | None = None, rank: int | None = None, cause: str = ""
    ) -> None:
        super().__init__(message, step=step, rank=rank)
        self.cause = cause


class WorkersLostError(TrainingError):
    """Every worker of the group is gone, and with them the parameters: only a restart from
    the last checkpoint can continue the job."""


def gather(refs: Sequence[Any], step: int | None, ranks: Sequence[int] | None = None) -> list[Any]:
    """``ray.get`` each reference in order; ``ranks`` names the rank behind each (default
    0, 1, ...). A dead worker's result is a ``WorkerDiedError`` in its place; a worker's own
    exception is raised as its ``TrainingError``, naming its rank and ``step``."""
    results: list[Any] = []
    for rank, ref in zip(ranks if ranks is not None else range(len(refs)), refs, strict=True):
        try:
            results.append(ray.get(ref))
        except RayTaskError as error:
            raise task_error(error, rank, step) from None
        except RayActorError as error:
            cause = type(error).__name__
            message = f"worker {rank} died ({cause})"
            results.append(WorkerDiedError(message, step=step, rank=rank, cause=cause))
    return results


def task_error(error: RayTaskError, rank: int, step: int | None) -> TrainingError:
    """The ``TrainingError`` a worker raised, or one naming its rank and exception."""
    cause = error.cause if error.cause is not None else error
    if isinstance(cause, TrainingError):
        return cause
    return TrainingError(
        f"worker {rank} failed: {type(cause).__name__}: {cause}", step=step, rank=rank
    )
