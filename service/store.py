"""The durable job store: jobs, their events and their metric records, on SQLAlchemy Core.

SQLite (a file, WAL mode) by default, PostgreSQL by URL; only portable column types. Every
method opens its own short transaction, so one ``JobStore`` may be shared by many threads.
Status changes are compare-and-set updates (``UPDATE ... WHERE status = :old``), so two
racing transitions can never both succeed and a terminal status never changes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from sparsetrain.errors import SparsetrainError
from sparsetrain.jobs import Job, JobList, WorkerInfo
from sparsetrain.service.store_events import EventLog, add_event_row
from sparsetrain.service.store_metrics import MetricRecords
from sparsetrain.service.store_schema import (
    add_missing_columns,
    event_table,
    job_table,
    metadata,
    metric_table,
    sqlite_pragmas,
)
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus


class StoreError(SparsetrainError):
    """Root of the job store's errors."""


class JobNotFound(StoreError):  # noqa: N818 (names are the public interface)
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found")


class JobFileNotFound(JobNotFound):
    """The job exists but has no ``what`` file (yet): its model, its samples."""

    def __init__(self, job_id: str, what: str) -> None:
        self.job_id, self.what = job_id, what
        StoreError.__init__(self, f"job {job_id} has no {what} file (yet)")


class IllegalTransition(StoreError):  # noqa: N818 (names are the public interface)
    def __init__(self, job_id: str, current: JobStatus, to: JobStatus) -> None:
        self.job_id, self.current, self.to = job_id, current, to
        super().__init__(f"job {job_id} is {current.value} and cannot become {to.value}")


class IdempotencyConflict(StoreError):  # noqa: N818 (names are the public interface)
    """The owner reused an Idempotency-Key with a different spec."""


class JobNotTerminal(StoreError):  # noqa: N818 (names are the public interface)
    def __init__(self, job_id: str, current: JobStatus) -> None:
        self.job_id, self.current = job_id, current
        super().__init__(f"job {job_id} is {current.value}; cancel it first")


class JobEnded(StoreError):  # noqa: N818 (names are the public interface)
    def __init__(self, job_id: str, current: JobStatus) -> None:
        self.job_id, self.current = job_id, current
        super().__init__(f"job {job_id} is {current.value}; it can no longer change")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class JobStore(MetricRecords, EventLog):
    """Jobs, events and metrics in one SQL database; safe to share between threads."""

    def __init__(self, url: str) -> None:
        """Connect to ``url`` and create the tables that are missing.

        A SQLite file's parent folder is created; SQLite runs in WAL mode with foreign keys on.
        """
        parsed = sa.make_url(url)
        kwargs: dict[str, Any] = {}
        # A lock serialises calls only for in-memory SQLite, where all threads share one connection.
        self._lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
            database = parsed.database or ""
            if database in ("", ":memory:") or "mode=memory" in url:
                kwargs["poolclass"] = StaticPool
                self._lock = threading.RLock()
            elif not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._engine = sa.create_engine(url, **kwargs)
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", sqlite_pragmas)
        metadata.create_all(self._engine)
        add_missing_columns(self._engine)

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._lock, self._engine.begin() as conn:
            yield conn

    def ping(self) -> bool:
        """True when the database answers ``SELECT 1``."""
        try:
            with self._tx() as conn:
                return conn.execute(sa.text("SELECT 1")).scalar() == 1
        except Exception:
            return False

    # -- jobs ---------------------------------------------------------------------------

    @staticmethod
    def _job(row: Row[Any]) -> Job:
        data = dict(row._mapping)
        del data["owner"], data["idempotency_key"]
        result_json = data.pop("result_json")
        data["result"] = json.loads(result_json) if result_json is not None else None
        workers_json = data.pop("workers_json")
        data["worker_details"] = json.loads(workers_json) if workers_json is not None else None
        data["spec"] = JobSpec.model_validate_json(data.pop("spec_json"))
        return Job.model_validate(data)

    @staticmethod
    def _row(conn: Connection, job_id: str, owner: str | None = None) -> Row[Any]:
        query = sa.select(job_table).where(job_table.c.id == job_id)
        if owner is not None:
            query = query.where(job_table.c.owner == owner)
        row = conn.execute(query).first()
        if row is None:
            raise JobNotFound(job_id)
        return row

    def _by_key(self, conn: Connection, owner: str, key: str, spec_json: str) -> Job | None:
        row = conn.execute(
            sa.select(job_table).where(
                job_table.c.owner == owner, job_table.c.idempotency_key == key
            )
        ).first()
        if row is None:
            return None
        if row.spec_json != spec_json:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for job {row.id} with a different spec"
            )
        return self._job(row)

    def create_job(
        self, spec: JobSpec, owner: str, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Insert a PENDING job and its "submitted" event; return ``(job, created)``.

        A key this owner already used returns that job with ``created=False`` when the spec is
        equal, and raises ``IdempotencyConflict`` otherwise.
        """
        spec_json = spec.model_dump_json()
        if idempotency_key is not None:
            with self._tx() as conn:
                existing = self._by_key(conn, owner, idempotency_key, spec_json)
            if existing is not None:
                return existing, False
        now = _now()
        job_id = uuid.uuid4().hex[:16]
        try:
            with self._tx() as conn:
                row: dict[str, Any] = {
                    "id": job_id,
                    "owner": owner,
                    "name": spec.name,
                    "spec_json": spec_json,
                }
                row |= {"idempotency_key": idempotency_key, "created_at": now, "updated_at": now}
                conn.execute(
                    sa.insert(job_table).values(status=JobStatus.PENDING.value, step=0, **row)
                )
                add_event_row(conn, job_id, now, "status", JobStatus.PENDING, "submitted")
                return self._job(self._row(conn, job_id)), True
        except IntegrityError:
            if idempotency_key is None:
                raise
            with self._tx() as conn:  # a concurrent create with the same key won the race
                existing = self._by_key(conn, owner, idempotency_key, spec_json)
            if existing is None:
                raise
            return existing, False

    def get_job(self, job_id: str, owner: str | None = None) -> Job:
        """The job; ``JobNotFound`` when missing or (with ``owner``) someone else's."""
        with self._tx() as conn:
            return self._job(self._row(conn, job_id, owner))

    def owner_of(self, job_id: str) -> str:
        """The principal that owns the job; ``JobNotFound`` when missing."""
        with self._tx() as conn:
            return str(self._row(conn, job_id).owner)

    def list_jobs(
        self, owner: str | None, status: JobStatus | None = None, limit: int = 50, offset: int = 0
    ) -> JobList:
        """One page of jobs, newest first; ``owner``/``status`` None match any."""
        conditions = []
        if owner is not None:
            conditions.append(job_table.c.owner == owner)
        if status is not None:
            conditions.append(job_table.c.status == status.value)
        with self._tx() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(job_table).where(*conditions)
            ).scalar_one()
            rows = conn.execute(
                sa.select(job_table)
                .where(*conditions)
                .order_by(job_table.c.created_at.desc(), job_table.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return JobList(items=[self._job(r) for r in rows], total=total, limit=limit, offset=offset)

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        reason: str,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Job:
        """Move the job to ``to`` and record a "status" event with ``reason``; return the job.

        Raises ``IllegalTransition`` unless ``current.can_become(to)`` (so never from a terminal
        status, nor to the current one); then nothing changes. Sets ``started_at`` on entering
        RUNNING, ``finished_at`` on entering a terminal status, ``error``/``result`` when given.
        """
        while True:
            with self._tx() as conn:
                current = JobStatus(self._row(conn, job_id).status)
                if not current.can_become(to):
                    raise IllegalTransition(job_id, current, to)
                now = _now()
                values: dict[str, Any] = {"status": to.value, "updated_at": now}
                if to is JobStatus.RUNNING:
                    values["started_at"] = now
                if to.is_terminal:
                    values["finished_at"] = now
                if error is not None:
                    values["error"] = error
                if result is not None:
                    values["result_json"] = json.dumps(result)
                changed = conn.execute(
                    job_table.update()
                    .where(job_table.c.id == job_id, job_table.c.status == current.value)
                    .values(**values)
                ).rowcount
                if changed != 1:
                    continue  # someone else moved it first: roll back and re-read
                add_event_row(conn, job_id, now, "status", to, reason)
                return self._job(self._row(conn, job_id))

    def set_progress(
        self,
        job_id: str,
        step: int,
        total_steps: int | None,
        workers: int | None = None,
        worker_details: Sequence[WorkerInfo] | None = None,
    ) -> None:
        """Set the job's ``step``/``total_steps`` (and live ``workers``, each worker's row
        ``worker_details``, when given) and ``updated_at``; records no event."""
        values: dict[str, Any] = {"step": step, "total_steps": total_steps, "updated_at": _now()}
        if workers is not None:
            values["workers"] = workers
        if worker_details is not None:
            values["workers_json"] = json.dumps([row.model_dump() for row in worker_details])
        self._update(job_id, values)

    def _update(self, job_id: str, values: dict[str, Any]) -> None:
        with self._tx() as conn:
            changed = conn.execute(
                job_table.update().where(job_table.c.id == job_id).values(**values)
            ).rowcount
        if changed == 0:
            raise JobNotFound(job_id)

    def set_target_workers(self, job_id: str, count: int, reason: str) -> Job:
        """Record a scale request (the size the job should train at) and a ``resize`` event
        with ``reason``; returns the job. The caller checks that the job is live."""
        with self._tx() as conn:
            self._row(conn, job_id)
            now = _now()
            conn.execute(
                job_table.update()
                .where(job_table.c.id == job_id)
                .values(target_workers=count, updated_at=now)
            )
            add_event_row(conn, job_id, now, "resize", None, reason)
            return self._job(self._row(conn, job_id))

    def count_restart(self, job_id: str) -> int:
        """Add one to the job's supervisor restarts; returns the new count."""
        with self._tx() as conn:
            conn.execute(
                job_table.update()
                .where(job_table.c.id == job_id)
                .values(restarts=job_table.c.restarts + 1, updated_at=_now())
            )
            return int(self._row(conn, job_id).restarts)

    def delete_job(self, job_id: str, owner: str | None = None) -> None:
        """Delete a terminal job with its events and metrics; ``JobNotTerminal`` otherwise."""
        with self._tx() as conn:
            current = JobStatus(self._row(conn, job_id, owner).status)
            if not current.is_terminal:
                raise JobNotTerminal(job_id, current)
            conn.execute(event_table.delete().where(event_table.c.job_id == job_id))
            conn.execute(metric_table.delete().where(metric_table.c.job_id == job_id))
            conn.execute(job_table.delete().where(job_table.c.id == job_id))

    def active_jobs(self) -> list[Job]:
        """Every job not in a terminal status, of any owner, oldest first."""
        live = [s.value for s in JobStatus if not s.is_terminal]
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(job_table)
                .where(job_table.c.status.in_(live))
                .order_by(job_table.c.created_at, job_table.c.id)
            ).all()
        return [self._job(r) for r in rows]

    def count_by_status(self) -> dict[JobStatus, int]:
        """Number of jobs in each status, every status present (0 when none)."""
        counts = dict.fromkeys(JobStatus, 0)
        with self._tx() as conn:
            for status, n in conn.execute(
                sa.select(job_table.c.status, sa.func.count()).group_by(job_table.c.status)
            ):
                counts[JobStatus(status)] = n
        return counts
