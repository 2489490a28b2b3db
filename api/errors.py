"""Typed errors shared by the SDK, the control plane and the workers.

Every error a user can cause carries enough context to fix it: the field path of a bad
spec value, the file and line of a malformed data file, the step of a diverged run.
"""

from __future__ import annotations

from collections.abc import Sequence


class SparsetrainError(Exception):
    """Root of every error raised by sparsetrain."""


class SpecError(SparsetrainError, ValueError):
    """A job spec value that is well-formed but cannot be used (e.g. ``k`` larger than ``d``).

    ``loc`` is the field path inside the job spec, outermost first.
    """

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        self.loc: tuple[str | int, ...] = tuple(loc)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.loc else message)

    @property
    def path(self) -> str:
        """The field path in dotted form, e.g. ``compression.k``."""
        return ".".join(str(part) for part in self.loc)

    def under(self, *prefix: str | int) -> SpecError:
        """Return the same error with ``prefix`` prepended to its field path."""
        return SpecError((*prefix, *self.loc), self.message)


class DataError(SparsetrainError, ValueError):
    """A data source that cannot be read: missing file, malformed line, empty shard."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class CheckpointError(SparsetrainError, ValueError):
    """A checkpoint that cannot be used: missing, partial, corrupt, or written for another job."""


class TrainingError(SparsetrainError, RuntimeError):
    """Training cannot continue (e.g. a non-finite gradient)."""

    def __init__(self, message: str, step: int | None = None, rank: int | None = None) -> None:
        self.step = step
        self.rank = rank
        self.message = message
        where = []
        if step is not None:
            where.append(f"step {step}")
        if rank is not None:
            where.append(f"rank {rank}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
