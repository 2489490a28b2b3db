"""The job store's event log: status moves, resizes, the supervisors' structured events
(one row per job, supervisor epoch and seq, so a replay stores nothing twice) and the
monitor's notes, read back in order.

``JobStore`` inherits ``EventLog``; ``add_event_row`` is also used inside its status moves.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy import Connection, Row

from sparsetrain.jobs import EventKind, JobEvent
from sparsetrain.service.store_schema import event_table
from sparsetrain.status import JobStatus
from sparsetrain.supervision import EventValue, SupervisorEvent

_EVENT_KINDS = frozenset(get_args(EventKind))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def add_event_row(
    conn: Connection,
    job_id: str,
    now: datetime,
    kind: str,
    status: JobStatus | None,
    message: str,
    data: dict[str, EventValue] | None = None,
) -> int:
    """Insert one event row and return its ``seq``."""
    value = status.value if status is not None else None
    values = {"job_id": job_id, "time": now, "kind": kind, "status": value, "message": message}
    if data:
        values["data"] = json.dumps(data)
    key = conn.execute(sa.insert(event_table).values(values)).inserted_primary_key
    assert key is not None
    return int(key[0])


def _event(row: Row[Any]) -> JobEvent:
    """A stored event row as the API's ``JobEvent``."""
    return JobEvent(
        seq=row.seq,
        job_id=row.job_id,
        time=row.time,
        kind=row.kind,
        status=row.status,
        message=row.message,
        data=json.loads(row.data) if row.data else {},
    )


class EventLog:
    """The event half of ``JobStore``."""

    def _tx(self) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError  # JobStore's short transaction

    @staticmethod
    def _row(conn: Connection, job_id: str, owner: str | None = None) -> Row[Any]:
        raise NotImplementedError  # JobStore's job row, or JobNotFound

    def _insert_ignore(self, table: sa.Table) -> Any:
        raise NotImplementedError  # MetricRecords' dialect-aware INSERT

    def add_event(
        self,
        job_id: str,
        kind: str,
        message: str,
        status: JobStatus | None = None,
        data: dict[str, EventValue] | None = None,
    ) -> JobEvent:
        """Append an event (kind "status", "checkpoint" or "log"; ``data``: its facts) to
        the job and return it."""
        if kind not in _EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; known: {sorted(_EVENT_KINDS)}")
        now = _now()
        with self._tx() as conn:
            self._row(conn, job_id)
            seq = add_event_row(conn, job_id, now, kind, status, message, data)
        values = {"seq": seq, "job_id": job_id, "time": now, "kind": kind, "status": status}
        return JobEvent.model_validate({**values, "message": message, "data": data or {}})

    def add_supervisor_events(self, job_id: str, events: Sequence[SupervisorEvent]) -> int:
        """Store the supervisor's events not stored yet, in order; return how many were new.

        Idempotent on (job, ``epoch``, ``seq``): an event already stored (a replay after a
        control-plane restart) is skipped, while a genuine repeat (the same message under a
        new ``seq``) is stored again. The unique key ``uq_job_events_source`` guards it.
        """
        if not events:
            return 0
        now = _now()
        added = 0
        with self._tx() as conn:
            self._row(conn, job_id)
            for epoch in sorted({event.epoch for event in events}):
                stored = set(
                    conn.execute(
                        sa.select(event_table.c.source_seq).where(
                            event_table.c.job_id == job_id, event_table.c.epoch == epoch
                        )
                    ).scalars()
                )
                for event in events:
                    if event.epoch != epoch or event.seq in stored:
                        continue
                    stored.add(event.seq)
                    row = {
                        "job_id": job_id,
                        "time": now,
                        "kind": event.kind.value,
                        "message": event.message,
                        "epoch": event.epoch,
                        "source_seq": event.seq,
                        "data": json.dumps(event.data) if event.data else None,
                    }
                    result = conn.execute(self._insert_ignore(event_table).values(row))
                    added += max(result.rowcount, 0)
        return added

    def events(self, job_id: str, after_seq: int = 0, limit: int = 1000) -> list[JobEvent]:
        """The job's events with ``seq > after_seq``, ascending, at most ``limit``."""
        with self._tx() as conn:
            self._row(conn, job_id)
            rows = conn.execute(
                sa.select(event_table)
                .where(event_table.c.job_id == job_id, event_table.c.seq > after_seq)
                .order_by(event_table.c.seq)
                .limit(limit)
            ).all()
        return [_event(row) for row in rows]
