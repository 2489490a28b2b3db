"""The job store on a real SQLite file: lifecycle, ownership, idempotency, metrics, durability."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sparsetrain.jobs import Job
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.service.store import (
    IdempotencyConflict,
    IllegalTransition,
    JobNotFound,
    JobNotTerminal,
    JobStore,
    StoreError,
)
from sparsetrain.status import JobStatus
from tests.specs import job_spec_model

S = JobStatus


_spec = job_spec_model


def _step(step: int) -> StepMetrics:
    sent = {"bytes_sent": 8 * step, "bytes_per_worker": [4 * step] * 2, "density": 0.1}
    times = {"compute_s": 0.01, "compress_s": 0.001, "exchange_s": 0.002}
    return StepMetrics.model_validate(
        {"step": step, "loss": 1 / (step + 1), "lr": 0.1, **sent, **times}
    )


def _eval(step: int) -> EvalMetrics:
    return EvalMetrics(step=step, train_loss=0.5, train_accuracy=0.9)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'jobs.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[JobStore]:
    s = JobStore(db_url)
    yield s
    s.close()


def _run_to(store: JobStore, job: Job, *path: JobStatus) -> Job:
    for to in path:
        job = store.transition(job.id, to, f"to {to.value}")
    return job


def _row_counts(db_file: Path) -> dict[str, int]:
    with sqlite3.connect(db_file) as conn:
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("jobs", "job_events", "job_metrics")
        }


def test_create_get_and_fields(store: JobStore) -> None:
    job, created = store.create_job(_spec(name="first"), owner="alice")
    assert created
    assert len(job.id) == 16 and int(job.id, 16) >= 0
    assert job.status is S.PENDING and job.name == "first" and job.spec == _spec(name="first")
    assert job.step == 0 and job.started_at is None and job.finished_at is None
    assert store.get_job(job.id) == job
    assert store.get_job(job.id, owner="alice") == job
    events = store.events(job.id)
    assert [(e.kind, e.status, e.message) for e in events] == [("status", S.PENDING, "submitted")]
    assert store.ping()


def test_datetimes_are_timezone_aware_utc(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    job = _run_to(store, job, S.STARTING, S.RUNNING, S.SUCCEEDED)
    for value in (job.created_at, job.updated_at, job.started_at, job.finished_at):
        assert value is not None and value.utcoffset() is not None
        assert value.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert job.created_at <= job.started_at <= job.finished_at  # type: ignore[operator]
    assert all(e.time.tzinfo is not None for e in store.events(job.id))


def test_list_newest_first_filter_paging_and_total(store: JobStore) -> None:
    ids = [store.create_job(_spec(steps=i + 1), owner="alice")[0].id for i in range(5)]
    store.create_job(_spec(), owner="bob")
    page = store.list_jobs("alice")
    assert [j.id for j in page.items] == ids[::-1]
    assert page.total == 5 and page.limit == 50 and page.offset == 0
    page = store.list_jobs("alice", limit=2, offset=1)
    assert [j.id for j in page.items] == [ids[3], ids[2]] and page.total == 5
    assert store.list_jobs("alice", offset=10).items == []
    store.transition(ids[1], S.CANCELLED, "user")
    cancelled = store.list_jobs("alice", status=S.CANCELLED)
    assert [j.id for j in cancelled.items] == [ids[1]] and cancelled.total == 1
    assert store.list_jobs("alice", status=S.PENDING).total == 4
    assert store.list_jobs(None).total == 6


def test_owner_isolation(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    with pytest.raises(JobNotFound, match=f"job {job.id} not found"):
        store.get_job(job.id, owner="bob")
    with pytest.raises(JobNotFound):
        store.get_job("0" * 16)
    store.transition(job.id, S.CANCELLED, "user")
    with pytest.raises(JobNotFound):
        store.delete_job(job.id, owner="bob")
    assert store.list_jobs("bob").total == 0 and store.list_jobs("bob").items == []
    assert [j.id for j in store.list_jobs("alice").items] == [job.id]
    assert issubclass(JobNotFound, StoreError)


def test_idempotency_key(store: JobStore) -> None:
    first, created = store.create_job(_spec(), owner="alice", idempotency_key="k1")
    again, created_again = store.create_job(_spec(), owner="alice", idempotency_key="k1")
    assert created and not created_again and again == first
    with pytest.raises(IdempotencyConflict):
        store.create_job(_spec(steps=99), owner="alice", idempotency_key="k1")
    other, created_other = store.create_job(_spec(), owner="bob", idempotency_key="k1")
    assert created_other and other.id != first.id
    # no key: always a new job
    assert (
        store.create_job(_spec(), owner="alice")[0].id != store.create_job(_spec(), "alice")[0].id
    )
    assert store.list_jobs("alice").total == 3 and store.list_jobs("bob").total == 1


def _meet_before(store: JobStore, statement_prefix: str, parties: int) -> None:
    """Hold each thread's first ``statement_prefix`` statement until ``parties`` threads are there.

    This forces the racy interleaving: every thread has done its reads before any one writes.
    """
    gate = threading.Barrier(parties, timeout=10)
    seen: set[int] = set()

    @sa.event.listens_for(store._engine, "before_cursor_execute")
    def _meet(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith(statement_prefix) and threading.get_ident() not in seen:
            seen.add(threading.get_ident())
            gate.wait()


def _in_threads(*targets: Callable[[], None]) -> None:
    start = threading.Barrier(len(targets))

    def run(target: Callable[[], None]) -> None:
        start.wait()
        target()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("interleave", [False, True])
def test_concurrent_creates_with_one_key_make_one_job(store: JobStore, interleave: bool) -> None:
    if interleave:  # both pass the key lookup, then both insert: one hits the unique constraint
        _meet_before(store, "INSERT INTO jobs", 2)
    results: list[tuple[Job, bool]] = []

    def create() -> None:
        results.append(store.create_job(_spec(), owner="alice", idempotency_key="same"))

    _in_threads(create, create)
    assert len(results) == 2 and results[0][0] == results[1][0]
    assert sorted(created for _, created in results) == [False, True]
    assert store.list_jobs("alice").total == 1


def test_legal_lifecycle(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    job = store.transition(job.id, S.STARTING, "placing workers")
    assert job.status is S.STARTING and job.started_at is None
    job = store.transition(job.id, S.RUNNING, "workers up")
    assert job.status is S.RUNNING and job.started_at is not None and job.finished_at is None
    started = job.started_at
    store.set_progress(job.id, 7, 10)
    assert store.get_job(job.id).step == 7 and store.get_job(job.id).total_steps == 10
    job = store.transition(job.id, S.SUCCEEDED, "done", result={"train_loss": 0.25})
    assert job.status is S.SUCCEEDED and job.started_at == started
    assert job.finished_at is not None and job.finished_at >= started
    assert job.result == {"train_loss": 0.25} and job.error is None and job.step == 7
    events = store.events(job.id)
    assert [(e.kind, e.status, e.message) for e in events] == [
        ("status", S.PENDING, "submitted"),
        ("status", S.STARTING, "placing workers"),
        ("status", S.RUNNING, "workers up"),
        ("status", S.SUCCEEDED, "done"),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert store.events(job.id, after_seq=events[1].seq) == events[2:]
    assert store.events(job.id, limit=2) == events[:2]


def test_failure_records_error(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    job = store.transition(job.id, S.FAILED, "launch failed", error="no resources")
    assert job.status is S.FAILED and job.error == "no resources" and job.finished_at is not None
    assert job.started_at is None


@pytest.mark.parametrize(
    ("path", "to"),
    [
        ((), S.SUCCEEDED),
        ((), S.RUNNING),
        ((), S.PENDING),
        ((S.STARTING, S.RUNNING), S.RUNNING),
        ((S.STARTING, S.RUNNING, S.SUCCEEDED), S.RUNNING),
        ((S.STARTING, S.RUNNING, S.SUCCEEDED), S.FAILED),
        ((S.STARTING, S.RUNNING, S.SUCCEEDED), S.CANCELLED),
        ((S.STARTING, S.RUNNING, S.SUCCEEDED), S.SUCCEEDED),
        ((S.FAILED,), S.RUNNING),
        ((S.CANCELLED,), S.PENDING),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(
    store: JobStore, path: tuple[JobStatus, ...], to: JobStatus
) -> None:
    job = _run_to(store, store.create_job(_spec(), owner="alice")[0], *path)
    events_before = store.events(job.id)
    current = job.status.value
    with pytest.raises(IllegalTransition, match=f"job {job.id} is {current} and cannot become"):
        store.transition(job.id, to, "nope", error="x", result={"a": 1})
    assert store.get_job(job.id) == job
    assert store.events(job.id) == events_before


def test_transition_of_missing_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.transition("missing", S.STARTING, "x")
    with pytest.raises(JobNotFound):
        store.set_progress("missing", 1, None)
    with pytest.raises(JobNotFound):
        store.add_event("missing", "log", "x")


@pytest.mark.parametrize("interleave", [False, True])
@pytest.mark.parametrize("attempt", range(4))
def test_concurrent_transitions_only_one_wins(db_url: str, attempt: int, interleave: bool) -> None:
    store = JobStore(db_url)
    try:
        job = _run_to(store, store.create_job(_spec(), owner="alice")[0], S.STARTING, S.RUNNING)
        if interleave:  # both read RUNNING before either writes
            _meet_before(store, "UPDATE jobs", 2)
        outcomes: dict[JobStatus, object] = {}

        def move(to: JobStatus) -> Callable[[], None]:
            def run() -> None:
                try:
                    outcomes[to] = store.transition(job.id, to, f"race {attempt}")
                except IllegalTransition as exc:
                    outcomes[to] = exc

            return run

        _in_threads(move(S.SUCCEEDED), move(S.CANCELLED))
        winners = [to for to, out in outcomes.items() if isinstance(out, Job)]
        losers = [out for out in outcomes.values() if isinstance(out, IllegalTransition)]
        assert len(winners) == 1 and len(losers) == 1
        assert f"is {winners[0].value} and cannot become" in str(losers[0])
        assert store.get_job(job.id).status is winners[0]
        status_events = [e.status for e in store.events(job.id)]
        assert status_events == [S.PENDING, S.STARTING, S.RUNNING, winners[0]]
    finally:
        store.close()


def test_add_event_kinds(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    ev = store.add_event(job.id, "checkpoint", "step 10 saved")
    assert ev.kind == "checkpoint" and ev.status is None and ev.job_id == job.id
    assert store.events(job.id)[-1] == ev
    with pytest.raises(ValueError, match="unknown event kind"):
        store.add_event(job.id, "bogus", "x")


def test_add_metrics_is_idempotent(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    assert store.last_metric_step(job.id) is None
    assert store.add_metrics(job.id, [_step(i) for i in range(5)], [_eval(0), _eval(4)]) == 7
    assert store.last_metric_step(job.id) == 4
    # overlapping replay: steps 3..7 (3, 4 known) and evals 4 (known), 8 (new)
    assert store.add_metrics(job.id, [_step(i) for i in range(3, 8)], [_eval(4), _eval(8)]) == 4
    assert store.add_metrics(job.id, [_step(i) for i in range(8)], []) == 0
    # duplicates inside one batch count once
    assert store.add_metrics(job.id, [_step(9), _step(9)], []) == 1
    page = store.metrics(job.id)
    assert [m.step for m in page.steps] == [*range(8), 9] and not page.downsampled
    assert [m.step for m in page.evals] == [0, 4, 8]
    assert page.steps[3] == _step(3) and page.evals[0] == _eval(0)
    assert store.last_metric_step(job.id) == 9
    assert store.add_metrics(job.id, [], []) == 0
    with pytest.raises(JobNotFound):
        store.add_metrics("missing", [_step(0)], [])


def test_metrics_since_and_downsampling(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    store.add_metrics(job.id, [_step(i) for i in range(100)], [_eval(i) for i in range(0, 100, 10)])
    page = store.metrics(job.id, since=90)
    assert [m.step for m in page.steps] == list(range(90, 100))
    assert [m.step for m in page.evals] == [90] and not page.downsampled
    for max_points in (2, 3, 7, 10, 33, 94):
        page = store.metrics(job.id, since=5, max_points=max_points)
        steps = [m.step for m in page.steps]
        assert page.downsampled and 2 <= len(steps) <= max_points
        assert page.step_records == 95  # steps 5..99 matched before thinning
        assert steps[0] == 5 and steps[-1] == 99 and steps == sorted(set(steps))
        assert [m.step for m in page.evals] == list(range(10, 100, 10))  # never downsampled
    page = store.metrics(job.id, max_points=100)
    assert len(page.steps) == 100 and not page.downsampled and page.step_records == 100
    assert [m.step for m in store.metrics(job.id, max_points=1).steps] == [99]
    with pytest.raises(ValueError):
        store.metrics(job.id, max_points=0)


def test_delete_only_terminal_and_cascades(store: JobStore, db_url: str) -> None:
    job, _ = store.create_job(_spec(), owner="alice")
    keep, _ = store.create_job(_spec(), owner="alice")
    for j in (job, keep):
        store.add_metrics(j.id, [_step(0), _step(1)], [_eval(1)])
    job = _run_to(store, job, S.STARTING, S.RUNNING)
    with pytest.raises(JobNotTerminal, match=f"job {job.id} is RUNNING; cancel it first"):
        store.delete_job(job.id)
    assert store.get_job(job.id).status is S.RUNNING
    store.transition(job.id, S.CANCELLED, "user")
    db_file = Path(db_url.removeprefix("sqlite:///"))
    before = _row_counts(db_file)
    store.delete_job(job.id, owner="alice")
    with pytest.raises(JobNotFound):
        store.get_job(job.id)
    with pytest.raises(JobNotFound):
        store.events(job.id)
    after = _row_counts(db_file)
    assert after == {"jobs": 1, "job_events": 1, "job_metrics": 3}
    assert before["job_events"] - after["job_events"] == 4
    assert len(store.metrics(keep.id).steps) == 2  # the other job is untouched


def test_active_jobs_and_count_by_status(store: JobStore) -> None:
    assert store.count_by_status() == dict.fromkeys(JobStatus, 0)
    a = store.create_job(_spec(), owner="alice")[0]
    b = _run_to(store, store.create_job(_spec(), owner="bob")[0], S.STARTING, S.RUNNING)
    _run_to(store, store.create_job(_spec(), owner="bob")[0], S.FAILED)
    _run_to(store, store.create_job(_spec(), owner="carol")[0], S.CANCELLED)
    _run_to(store, store.create_job(_spec(), owner="carol")[0], S.CANCELLED)
    assert {j.id for j in store.active_jobs()} == {a.id, b.id}
    counts = store.count_by_status()
    assert set(counts) == set(JobStatus)
    expected = {S.PENDING: 1, S.RUNNING: 1, S.FAILED: 1, S.CANCELLED: 2}
    assert counts == {s: expected.get(s, 0) for s in JobStatus}


def test_durable_across_reopen(db_url: str) -> None:
    store = JobStore(db_url)
    job, _ = store.create_job(_spec(name="durable"), owner="alice", idempotency_key="k")
    job = _run_to(store, job, S.STARTING, S.RUNNING)
    store.set_progress(job.id, 3, 10)
    store.add_metrics(job.id, [_step(i) for i in range(4)], [_eval(3)])
    store.add_event(job.id, "log", "hello")
    events = store.events(job.id)
    job = store.get_job(job.id)
    store.close()

    reopened = JobStore(db_url)
    try:
        assert reopened.get_job(job.id, owner="alice") == job
        assert reopened.events(job.id) == events
        page = reopened.metrics(job.id)
        assert [m.step for m in page.steps] == [0, 1, 2, 3] and [m.step for m in page.evals] == [3]
        assert reopened.create_job(_spec(name="durable"), "alice", "k") == (job, False)
        assert [j.id for j in reopened.active_jobs()] == [job.id]
        # seq keeps increasing after a restart
        assert reopened.add_event(job.id, "log", "again").seq > events[-1].seq
        assert reopened.transition(job.id, S.SUCCEEDED, "done").status is S.SUCCEEDED
    finally:
        reopened.close()


def test_sqlite_pragmas(store: JobStore, db_url: str) -> None:
    db_file = Path(db_url.removeprefix("sqlite:///"))
    assert db_file.parent.name == "nested" and db_file.exists()
    with store._engine.connect() as conn:
        pragmas: dict[str, Any] = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 1,
    }
    with sqlite3.connect(db_file) as raw:  # WAL is a property of the file, seen by any reader
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_from_before_elastic_jobs_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = JobStore(f"sqlite:///{path}")
    job, _ = store.create_job(_spec(), "alice")
    store.close()
    with sqlite3.connect(path) as conn:  # the jobs table as the first release made it
        for column in ("workers", "target_workers", "restarts"):
            conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    reopened = JobStore(f"sqlite:///{path}")
    try:
        old = reopened.get_job(job.id)
        assert (old.workers, old.target_workers, old.restarts) == (None, None, 0)
        assert reopened.count_restart(job.id) == 1
        reopened.set_target_workers(job.id, 3, "scale requested")
        assert reopened.get_job(job.id).target_workers == 3
    finally:
        reopened.close()


def test_truncate_metrics_drops_the_rolled_back_steps(store: JobStore) -> None:
    job, _ = store.create_job(_spec(), "alice")
    store.add_metrics(job.id, [_step(step) for step in range(10)], [_eval(s) for s in (0, 5, 10)])
    assert store.truncate_metrics(job.id, 5) == 5 + 1
    page = store.metrics(job.id)
    assert [m.step for m in page.steps] == list(range(5))
    assert [e.step for e in page.evals] == [0, 5]
