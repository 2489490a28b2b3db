"""The job store's tables (SQLAlchemy Core, portable types) and SQLite connection set-up."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        return None if value is None else _utc(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)


def _job_id_column(index: bool) -> sa.Column[str]:
    fk = sa.ForeignKey("jobs.id", ondelete="CASCADE")
    return sa.Column("job_id", sa.String(32), fk, nullable=False, index=index)


metadata = sa.MetaData()
job_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("step", sa.Integer, nullable=False, default=0),
    sa.Column("total_steps", sa.Integer),
    sa.Column("workers", sa.Integer),
    sa.Column("target_workers", sa.Integer),
    sa.Column("restarts", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("result_json", sa.Text),
    sa.Column("workers_json", sa.Text),  # JSON list of the workers' rows, last reported
    sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
)
event_table = sa.Table(
    "job_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    _job_id_column(index=True),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16)),
    sa.Column("message", sa.Text, nullable=False),
    # A supervisor's event: which launch of the job's supervisor reported it, and its number
    # there; unique per job, so a replayed event is stored once (NULL for the server's own).
    sa.Column("epoch", sa.Integer),
    sa.Column("source_seq", sa.Integer),
    sa.Column("data", sa.Text),  # JSON object of the event's facts; NULL: none
    sa.Index("uq_job_events_source", "job_id", "epoch", "source_seq", unique=True),
    sqlite_autoincrement=True,  # seq never reused, even after the newest job is deleted
)
metric_table = sa.Table(
    "job_metrics",
    metadata,
    _job_id_column(index=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("job_id", "kind", "step"),
)


# Columns added after the first release, with the constraint each is added with:
# ``add_missing_columns`` brings older database files up to date.
_ADDED_COLUMNS = {
    "jobs": {
        "workers": "",
        "target_workers": "",
        "restarts": " NOT NULL DEFAULT 0",
        "workers_json": "",
    },
    "job_events": {"epoch": "", "source_seq": "", "data": ""},
}
# Indexes added after the first release (created if missing, after the columns).
_ADDED_INDEXES = ("uq_job_events_source",)


def add_missing_columns(engine: sa.Engine) -> None:
    """Add the columns of ``_ADDED_COLUMNS`` and the indexes of ``_ADDED_INDEXES`` a database
    made by an older release lacks. Columns are only ever added, nullable or with a default,
    so old rows stay valid."""
    _add_columns(engine)
    indexes = {str(i.name): i for table in metadata.tables.values() for i in table.indexes}
    for name in _ADDED_INDEXES:
        indexes[name].create(engine, checkfirst=True)


def _add_columns(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    for table_name, columns in _ADDED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table_name)}
        table = metadata.tables[table_name]
        with engine.begin() as conn:
            for name, constraint in columns.items():
                if name not in present:
                    kind = table.c[name].type.compile(dialect=engine.dialect)
                    conn.execute(
                        sa.text(f"ALTER TABLE {table_name} ADD COLUMN {name} {kind}{constraint}")
                    )


_SQLITE_PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=5000", "synchronous=NORMAL")


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Run on every new SQLite connection (WAL is a property of the file; the rest are not)."""
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
