"""The blocking ``Client`` against a live server: uvicorn on loopback, in a thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparsetrain import Client, JobRef, JobStatus, NotFound, ServerSentEvent
from sparsetrain.jobs import JobEvent
from tests.api.conftest import LiveServer
from tests.specs import job_spec


def test_submit_from_yaml_tick_wait(live: LiveServer, live_client: Client, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_spec(name="from-yaml")))
    job = live_client.submit(path)
    assert job.status is JobStatus.PENDING and job.name == "from-yaml"
    live.tick(4)
    done = live_client.wait(job.id, timeout=10, poll=0.01)
    assert done.status is JobStatus.SUCCEEDED and done.step == 10
    assert [m.step for m in live_client.metrics(job.id)] == list(range(10))
    assert live_client.health() is True


def test_wait_times_out(live_client: Client) -> None:
    job = live_client.submit(job_spec())
    with pytest.raises(TimeoutError, match=job.id):
        live_client.wait(job.id, timeout=0.1, poll=0.02)


def test_events_stream_while_the_job_runs(live: LiveServer, live_client: Client) -> None:
    """Each monitor pass happens only after the previous event arrived, so the stream is
    read live, not replayed."""
    job = live_client.submit(job_spec())
    events: list[ServerSentEvent] = []
    for event in live_client.events(job.id):
        events.append(event)
        if event.event != "end":
            live.tick()  # the next pass; passes after the job ended change nothing
    statuses = [JobEvent.model_validate_json(e.data).status for e in events if e.event == "status"]
    assert statuses == [
        JobStatus.PENDING,
        JobStatus.STARTING,
        JobStatus.RUNNING,
        JobStatus.SUCCEEDED,
    ]
    kinds = [e.event for e in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    assert {"metrics", "checkpoint"} <= set(kinds)
    seqs = [int(e.id) for e in events if e.event == "status" and e.id is not None]
    assert seqs == sorted(seqs) and len(seqs) == 4


def test_download_model_and_delete(live: LiveServer, live_client: Client, tmp_path: Path) -> None:
    ref = live_client.submit_job(job_spec())
    assert isinstance(ref, JobRef)
    live.tick(4)
    assert ref.wait(timeout=10, poll=0.01).status is JobStatus.SUCCEEDED
    out = tmp_path / "models"
    out.mkdir()
    with pytest.raises(NotFound, match="has no model file"):  # the fake launcher keeps none
        ref.download_model(out)
    assert list(out.iterdir()) == []  # no partial file
    [*events] = ref.events()
    assert events[-1].event == "end"
    ref.delete()
    with pytest.raises(NotFound):
        live_client.get(ref.id)
    with pytest.raises(NotFound):
        ref.delete()


def test_cancel_through_the_handle(live_client: Client) -> None:
    ref = live_client.job(live_client.submit(job_spec()).id)
    assert ref.cancel().status is JobStatus.CANCELLED
    assert ref.last is not None and ref.last.status is JobStatus.CANCELLED
    assert live_client.list(status="CANCELLED").total == 1
