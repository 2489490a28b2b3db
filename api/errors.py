"""Typed errors shared by the SDK, the control plane and the workers.

Every error a user can cause carries enough context to fix it: the field path of a bad
spec value, the file and line of a malformed data file, the step of a diverged run. They
pickle with that context (``__reduce__``), so an error a worker raises reaches the
supervisor, across Ray, as itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _where(place: str, line: int | None) -> str:
    """``place:line``, or ``place`` alone when the line is not known."""
    return f"{place}:{line}" if line is not None else place


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

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.loc, self.message)

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
        super().__init__(f"{_where(source, line)}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.source, self.message, self.line)


class CheckpointError(SparsetrainError, ValueError):
    """A checkpoint that cannot be used: missing, partial, corrupt, or written for another job."""


class TrainingError(SparsetrainError, RuntimeError):
    """Training cannot continue (e.g. a non-finite gradient).

    Subclasses may take other constructor arguments: every one pickles as its message and
    attributes without calling its constructor again."""

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

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args, dict(vars(self)))


def _restore(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    """The error of class ``cls`` with ``args`` and attributes ``state``, its constructor
    not called (``TrainingError.__reduce__``)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


# -- the SDK's errors: what the REST API answered, or that it could not be reached ----------


@dataclass
class FieldIssue:
    """One invalid field of a request: its path (outermost first) and what is wrong with it."""

    loc: list[str | int]
    msg: str

    @property
    def path(self) -> str:
        """The field path in dotted form, e.g. ``compression.topk.ratio``."""
        return ".".join(str(part) for part in self.loc)


class ApiError(SparsetrainError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``title`` and ``detail`` come from the problem+json body
    (or the response text when the body is not problem+json), and ``problem`` is that body
    as a dict (empty when there was none).
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")


class NotFound(ApiError):  # noqa: N818 (the names are the public interface)
    """404: no such job (or it belongs to another principal), or no such file yet."""


class Conflict(ApiError):  # noqa: N818
    """409: the job is in the wrong state for the request (e.g. cancelling an ended job), or an
    Idempotency-Key was reused with a different spec."""


class ValidationFailed(ApiError):  # noqa: N818
    """422 (or 400): the request or the job spec is invalid; ``errors`` lists each field."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        problem: Mapping[str, Any] | None = None,
        errors: Sequence[FieldIssue] = (),
    ) -> None:
        super().__init__(status, title, detail, problem)
        self.errors: list[FieldIssue] = list(errors)

    def lines(self) -> list[str]:
        """One ``field.path: message`` line per invalid field (the detail when none is named)."""
        if self.errors:
            return [f"{e.path}: {e.msg}" if e.loc else e.msg for e in self.errors]
        return [self.detail or self.title]


class Unauthorized(ApiError):  # noqa: N818
    """401 (or 403): no token, or a token the server does not know."""


class ServerError(ApiError):
    """5xx: the server failed (retryable ones were already retried where that is safe)."""


class TransportError(SparsetrainError):
    """The server could not be reached (connection refused, DNS, timeout, dropped connection).

    ``url`` is the server URL that was tried.
    """

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.url, self.message)


class SpecFileError(SparsetrainError, ValueError):
    """A job spec file that cannot be parsed: missing, malformed YAML/JSON, or not a mapping.

    ``path`` is the file, ``line`` the 1-based line of the problem when known.
    """

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{_where(path, line)}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.message, self.line)
