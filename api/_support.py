"""What both clients share above the wire: the ``Metrics`` result, atomic file writes, and
the deadline arithmetic of ``wait``."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sparsetrain.jobs import Job, MetricsPage
from sparsetrain.metrics import EvalMetrics, StepMetrics, cumulative_bytes

if TYPE_CHECKING:
    import pandas


class Metrics(list[StepMetrics]):
    """A job's step records, oldest first (a plain list), with its evaluations alongside.

    ``evals`` are the full-data evaluations; ``downsampled`` is True when the server thinned
    the step records evenly to stay under ``max_points``, and ``step_records`` is how many
    there were. Each record's ``bytes_total`` is the exact running total either way.
    """

    def __init__(
        self,
        steps: Iterable[StepMetrics] = (),
        evals: Iterable[EvalMetrics] = (),
        *,
        downsampled: bool = False,
        job_id: str | None = None,
        step_records: int | None = None,
    ) -> None:
        super().__init__(steps)
        self.evals: list[EvalMetrics] = list(evals)
        self.downsampled = downsampled
        self.job_id = job_id
        self.step_records = len(self) if step_records is None else step_records

    @classmethod
    def from_page(cls, page: MetricsPage) -> Metrics:
        return cls(
            page.steps,
            page.evals,
            downsampled=page.downsampled,
            job_id=page.job_id,
            step_records=page.step_records,
        )

    @property
    def bytes_sent(self) -> int:
        """Wire bytes sent through the last record (exact when downsampled; a resumed run
        counts the steps before its checkpoint too); 0 without records."""
        totals = cumulative_bytes(self)
        return totals[-1] if totals else 0

    def __repr__(self) -> str:
        last = f", last step {self[-1].step}" if self else ""
        return (
            f"Metrics(job {self.job_id}: {len(self)} steps{last}, {len(self.evals)} evals, "
            f"downsampled={self.downsampled})"
        )

    def to_pandas(self) -> pandas.DataFrame:
        """The step records as a DataFrame indexed by step, one column per ``StepMetrics``
        field. Raises ``ImportError`` when pandas is not installed."""
        return _frame(self, list(StepMetrics.model_fields))

    def evals_to_pandas(self) -> pandas.DataFrame:
        """The evaluations as a DataFrame indexed by step (``ImportError`` without pandas)."""
        return _frame(self.evals, list(EvalMetrics.model_fields))


def _frame(records: Iterable[StepMetrics | EvalMetrics], columns: list[str]) -> Any:
    try:
        import pandas
    except ImportError as error:
        raise ImportError("Metrics.to_pandas needs pandas: pip install pandas") from error
    rows = [record.model_dump() for record in records]
    return pandas.DataFrame(rows, columns=columns).set_index("step")


class AtomicFile:
    """A file written under a temporary name beside ``target`` and renamed onto it only when
    the ``with`` block succeeds, so a partial download never appears at ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self._file: IO[bytes] | None = None

    def __enter__(self) -> AtomicFile:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(
            dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".part", delete=False
        )
        return self

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "use AtomicFile in a with block"
        self._file.write(chunk)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        assert self._file is not None
        self._file.close()
        if kind is None:
            os.replace(self._file.name, self.target)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self._file.name)


class Deadline:
    """How long ``wait`` may still sleep between polls; raises ``TimeoutError`` when spent."""

    def __init__(self, timeout: float | None, poll: float) -> None:
        if poll <= 0:
            raise ValueError("poll must be a positive number of seconds")
        self.timeout = timeout
        self.poll = poll
        self._end = None if timeout is None else time.monotonic() + timeout

    def next_sleep(self, job: Job) -> float:
        """Seconds to sleep before the next poll of the (not yet ended) ``job``."""
        if self._end is None:
            return self.poll
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"job {job.id} is still {job.status.value} (step {job.step}) "
                f"after {self.timeout:g} s"
            )
        return min(self.poll, left)
