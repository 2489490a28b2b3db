"""The job store's metric records: one row per (job, kind, step), stored idempotently,
read back in step order and thinned evenly when a page asks for fewer points.

``JobStore`` inherits these; they need only its transactions and its job-row check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Row

from sparsetrain.jobs import MetricsPage
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.service.store_schema import metric_table


def _downsample(n: int, max_points: int) -> list[int]:
    """Indices of an evenly spaced subset of ``range(n)`` keeping the first and the last."""
    if n <= max_points:
        return list(range(n))
    if max_points == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})


class MetricRecords:
    """The metric half of ``JobStore``."""

    _engine: sa.Engine

    def _tx(self) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError  # JobStore's short transaction

    @staticmethod
    def _row(conn: Connection, job_id: str, owner: str | None = None) -> Row[Any]:
        raise NotImplementedError  # JobStore's job row, or JobNotFound

    def truncate_metrics(self, job_id: str, from_step: int) -> int:
        """Delete the step records at ``from_step`` and later and the evaluations after
        ``from_step`` (a rolled-back run records them again); returns how many went."""
        with self._tx() as conn:
            steps = conn.execute(
                metric_table.delete().where(
                    metric_table.c.job_id == job_id,
                    metric_table.c.kind == "step",
                    metric_table.c.step >= from_step,
                )
            ).rowcount
            evals = conn.execute(
                metric_table.delete().where(
                    metric_table.c.job_id == job_id,
                    metric_table.c.kind == "eval",
                    metric_table.c.step > from_step,
                )
            ).rowcount
        return int(steps) + int(evals)

    def add_metrics(
        self, job_id: str, steps: Sequence[StepMetrics], evals: Sequence[EvalMetrics]
    ) -> int:
        """Store new metric records in one transaction; return how many were new.

        Idempotent on (job, kind, step): a record whose step is already stored (or repeated
        in the batch) is ignored, so replaying a batch or a backfill never duplicates.
        """
        added = 0
        with self._tx() as conn:
            self._row(conn, job_id)
            for kind, records in (("step", steps), ("eval", evals)):
                batch: dict[int, str] = {}
                for record in records:
                    batch.setdefault(record.step, record.model_dump_json())
                if not batch:
                    continue
                stored = set(
                    conn.execute(
                        sa.select(metric_table.c.step).where(
                            metric_table.c.job_id == job_id,
                            metric_table.c.kind == kind,
                            metric_table.c.step.between(min(batch), max(batch)),
                        )
                    ).scalars()
                )
                rows = [
                    {"job_id": job_id, "kind": kind, "step": step, "payload": payload}
                    for step, payload in batch.items()
                    if step not in stored
                ]
                if rows:
                    result = conn.execute(self._insert_ignore(metric_table), rows)
                    sane = self._engine.dialect.supports_sane_multi_rowcount
                    added += result.rowcount if sane and result.rowcount >= 0 else len(rows)
        return added

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT into ``table`` that skips rows whose unique key exists (a race with a
        concurrent writer of the same records)."""
        name = self._engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        return sa.insert(table)  # other backends: rows were filtered by the existence check

    def metrics(self, job_id: str, since: int = 0, max_points: int | None = None) -> MetricsPage:
        """Step and eval records with ``step >= since``, ascending.

        With more step records than ``max_points`` an evenly spaced subset that keeps the first
        and the last is returned (``downsampled=True``, ``step_records`` says how many
        matched); evals are never downsampled. The records' cumulative ``bytes_total`` keeps
        totals exact in a subset.
        """
        if max_points is not None and max_points < 1:
            raise ValueError("max_points must be at least 1")
        with self._tx() as conn:
            self._row(conn, job_id)
            query = (
                sa.select(metric_table.c.kind, metric_table.c.payload)
                .where(metric_table.c.job_id == job_id, metric_table.c.step >= since)
                .order_by(metric_table.c.step)
            )
            step_rows = conn.execute(query.where(metric_table.c.kind == "step")).all()
            eval_rows = conn.execute(query.where(metric_table.c.kind == "eval")).all()
        keep = _downsample(len(step_rows), max_points or len(step_rows) or 1)
        return MetricsPage(
            job_id=job_id,
            steps=[StepMetrics.model_validate_json(step_rows[i].payload) for i in keep],
            evals=[EvalMetrics.model_validate_json(r.payload) for r in eval_rows],
            downsampled=len(keep) < len(step_rows),
            step_records=len(step_rows),
        )

    def last_metric_step(self, job_id: str) -> int | None:
        """The largest step of the job's stored step records, None when there are none."""
        with self._tx() as conn:
            self._row(conn, job_id)
            return conn.execute(
                sa.select(sa.func.max(metric_table.c.step)).where(
                    metric_table.c.job_id == job_id, metric_table.c.kind == "step"
                )
            ).scalar()
