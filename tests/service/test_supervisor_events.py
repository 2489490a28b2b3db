"""Supervisor events are records keyed by (job, epoch, seq): a replay is stored once, a
genuine repeat again, across control-plane restarts; their facts reach clients as data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from sparsetrain.jobs import Job
from sparsetrain.service.app import create_app
from sparsetrain.service.deps import AppState
from sparsetrain.service.settings import Settings
from sparsetrain.service.store import JobStore
from sparsetrain.supervision import SupervisorEvent, SupervisorEventKind
from tests.service.fakes import FakeLauncher
from tests.specs import job_spec, job_spec_model

pytestmark = pytest.mark.anyio
AUTOSCALED = "autoscale: the cluster has free resources: target 2 -> 3 workers"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _control_plane(settings: Settings, launcher: FakeLauncher, job_id: str | None) -> str:
    """Run one control-plane process's life: start, submit a job unless ``job_id`` names
    one, run three monitor passes, stop. Returns the job's id."""
    app = create_app(settings, launcher=launcher)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.sparsetrain
        if job_id is None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.post("/v1/jobs", json=job_spec(steps=1000))
                assert response.status_code == 201, response.text
                job_id = Job.model_validate(response.json()).id
        for _ in range(3):
            state.monitor.tick()
    assert job_id is not None
    return job_id


async def test_a_genuine_repeat_is_stored_twice_and_a_replay_once_across_a_restart(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", monitor_interval_s=60.0)
    launcher = FakeLauncher()  # its supervisors outlive the control plane, as detached ones do
    job_id = await _control_plane(settings, launcher, None)
    launcher.jobs[job_id].event("resize", AUTOSCALED, old=2, new=3)
    await _control_plane(settings, launcher, job_id)  # stores seq 0
    launcher.jobs[job_id].event("resize", AUTOSCALED, old=2, new=3)  # the same message again
    await _control_plane(settings, launcher, job_id)  # a restart: seq 0 is replayed, 1 is new
    await _control_plane(settings, launcher, job_id)  # and once more: both are replays

    store = JobStore(settings.resolved_database_url())
    try:
        stored = [e for e in store.events(job_id) if e.message == AUTOSCALED]
    finally:
        store.close()
    assert len(stored) == 2
    assert all(e.kind == "resize" and e.data == {"old": 2, "new": 3} for e in stored)


def test_supervisor_events_are_idempotent_on_epoch_and_seq(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        job, _ = store.create_job(job_spec_model(), "alice")

        def event(epoch: int, seq: int) -> SupervisorEvent:
            kind = SupervisorEventKind.WORKER
            return SupervisorEvent(
                epoch=epoch, seq=seq, kind=kind, message="lost", data={"rank": 1}
            )

        assert store.add_supervisor_events(job.id, [event(0, 0), event(0, 1)]) == 2
        assert store.add_supervisor_events(job.id, [event(0, 0), event(0, 1)]) == 0  # replayed
        # A relaunched supervisor (epoch 1) numbers its events from 0 again: they are new.
        assert store.add_supervisor_events(job.id, [event(0, 1), event(1, 0)]) == 1
        events = store.events(job.id)
        assert [e.message for e in events if e.kind == "worker"] == ["lost"] * 3
        assert events[-1].data == {"rank": 1}
    finally:
        store.close()


def test_a_database_from_before_structured_events_gains_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = JobStore(f"sqlite:///{path}")
    job, _ = store.create_job(job_spec_model(), "alice")
    store.close()
    with sqlite3.connect(path) as conn:  # the events table as releases before this one made it
        conn.execute("DROP INDEX uq_job_events_source")
        for column in ("epoch", "source_seq", "data"):
            conn.execute(f"ALTER TABLE job_events DROP COLUMN {column}")
    reopened = JobStore(f"sqlite:///{path}")
    try:
        (old,) = reopened.events(job.id)  # "submitted", stored before: no data
        assert old.data == {}
        replayed = SupervisorEvent(epoch=0, seq=0, kind=SupervisorEventKind.RESIZE, message="m")
        assert reopened.add_supervisor_events(job.id, [replayed]) == 1
        assert reopened.add_supervisor_events(job.id, [replayed]) == 0
    finally:
        reopened.close()
    with sqlite3.connect(path) as conn:
        unique = conn.execute("PRAGMA index_info(uq_job_events_source)").fetchall()
    assert [row[2] for row in unique] == ["job_id", "epoch", "source_seq"]
