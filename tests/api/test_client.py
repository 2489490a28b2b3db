"""``AsyncClient`` against the real app (fake launcher, SQLite) through httpx's ASGI transport.

The ASGI transport buffers a whole response, so event streams are read once the job has
ended; ``test_client_live.py`` streams from a real server while the job runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sparsetrain import (
    AsyncClient,
    AsyncJobRef,
    Conflict,
    JobSpec,
    JobStatus,
    Metrics,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from sparsetrain.jobs import JobEvent, MetricsPage
from sparsetrain.service.settings import Settings
from tests.api.conftest import Tick, asgi_client, running_app
from tests.specs import job_spec

pytestmark = pytest.mark.anyio
MISSING = "0123456789abcdef"


async def test_submit_get_run_wait(sdk: AsyncClient, tick: Tick) -> None:
    job = await sdk.submit(job_spec(name="first"))
    assert job.status is JobStatus.PENDING and job.name == "first"
    assert (await sdk.get(job.id)).status is JobStatus.PENDING
    tick(1)
    assert (await sdk.get(job.id)).status is JobStatus.STARTING
    tick(1)
    running = await sdk.get(job.id)
    assert running.status is JobStatus.RUNNING and running.step == 4
    tick(2)
    done = await sdk.wait(job.id, timeout=10, poll=0.01)
    assert done.status is JobStatus.SUCCEEDED and done.step == 10
    assert done.result is not None and done.result["bytes_sent"] == 10 * 200


async def test_wait_times_out_on_a_job_that_does_not_end(sdk: AsyncClient) -> None:
    job = await sdk.submit(job_spec())
    with pytest.raises(TimeoutError, match=f"job {job.id} is still PENDING"):
        await sdk.wait(job.id, timeout=0.05, poll=0.01)


async def test_submit_accepts_a_jobspec_and_a_spec_file(sdk: AsyncClient, tmp_path: Path) -> None:
    spec = JobSpec.model_validate(job_spec(name="typed"))
    job = await sdk.submit(spec)
    assert job.spec == spec
    path = tmp_path / "job.json"
    path.write_text(spec.model_dump_json())
    from_file = await sdk.submit(path)
    assert from_file.spec == spec and from_file.id != job.id


async def test_list_pages_and_filters(sdk: AsyncClient) -> None:
    first = await sdk.submit(job_spec(name="first"))
    second = await sdk.submit(job_spec(name="second"))
    page = await sdk.list(limit=1)
    assert page.total == 2 and [j.id for j in page.items] == [second.id]
    page = await sdk.list(limit=1, offset=1)
    assert [j.id for j in page.items] == [first.id]
    await sdk.cancel(first.id)
    cancelled = await sdk.list(status="cancelled")  # case-insensitive
    assert [j.id for j in cancelled.items] == [first.id]
    pending = await sdk.list(status=JobStatus.PENDING)
    assert [j.id for j in pending.items] == [second.id]
    with pytest.raises(ValueError, match="unknown job status 'DONE'"):
        await sdk.list(status="DONE")


async def test_metrics_logs_checkpoints(sdk: AsyncClient, tick: Tick) -> None:
    job = await sdk.submit(job_spec())
    tick(4)
    metrics = await sdk.metrics(job.id)
    assert isinstance(metrics, Metrics)
    assert [m.step for m in metrics] == list(range(10))
    assert [e.step for e in metrics.evals] == [10] and not metrics.downsampled
    later = await sdk.metrics(job.id, since=6)
    assert [m.step for m in later] == [6, 7, 8, 9]
    thinned = await sdk.metrics(job.id, max_points=3)
    assert thinned.downsampled and len(thinned) <= 3
    logs = await sdk.logs(job.id)
    lines = logs.splitlines()
    assert "status [PENDING] submitted" in lines[0] and "[SUCCEEDED]" in lines[-2]
    assert lines[-1].endswith(
        "log summary: succeeded after 10 steps in 0.0 s, final loss 0.5, accuracy 0.9, "
        "sent 2,000 bytes"
    )
    assert any("checkpoint at step 8" in line for line in lines)
    workers = await sdk.logs(job.id, "workers")
    assert workers == "==> worker-0.log <==\nhello from rank 0\n"
    checkpoints = await sdk.checkpoints(job.id)
    assert [(c.step, c.nbytes) for c in checkpoints] == [(10, 123)]


async def test_metrics_to_pandas(sdk: AsyncClient, tick: Tick) -> None:
    pandas = pytest.importorskip("pandas")
    job = await sdk.submit(job_spec())
    tick(4)
    metrics = await sdk.metrics(job.id)
    frame = metrics.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.index) == list(range(10)) and frame.loc[3, "loss"] == pytest.approx(0.25)
    assert list(metrics.evals_to_pandas().index) == [10]


def test_to_pandas_without_pandas_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        Metrics().to_pandas()


async def test_events_replay_in_order_and_end(sdk: AsyncClient, tick: Tick) -> None:
    job = await sdk.submit(job_spec())
    tick(4)
    events = [event async for event in sdk.events(job.id)]
    statuses = [JobEvent.model_validate(e.json()).status for e in events if e.event == "status"]
    assert statuses == [
        JobStatus.PENDING,
        JobStatus.STARTING,
        JobStatus.RUNNING,
        JobStatus.SUCCEEDED,
    ]
    assert events[-1].event == "end" and events[-1].json()["status"] == "SUCCEEDED"
    pages = [MetricsPage.model_validate_json(e.data) for e in events if e.event == "metrics"]
    assert [m.step for page in pages for m in page.steps] == list(range(10))
    # Resuming after the first event replays everything after it, and nothing before.
    first = events[0]
    assert first.id is not None
    resumed = [e async for e in sdk.events(job.id, last_event_id=first.id)]
    assert [e.id for e in resumed if e.event == "status"] == [
        e.id for e in events[1:] if e.event == "status"
    ]


async def test_job_handle(sdk: AsyncClient, tick: Tick) -> None:
    ref = await sdk.submit_job(job_spec())
    assert isinstance(ref, AsyncJobRef) and ref.last is not None
    assert (await ref.refresh()).status is JobStatus.PENDING
    tick(4)
    assert (await ref.wait(timeout=5, poll=0.01)).status is JobStatus.SUCCEEDED
    assert len(await ref.metrics()) == 10
    assert [e.event async for e in ref.events()][-1] == "end"
    assert len(await ref.checkpoints()) == 1 and "submitted" in await ref.logs()
    await ref.delete()
    with pytest.raises(NotFound):
        await sdk.job(ref.id).refresh()


async def test_not_found(sdk: AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as caught:
        await sdk.get(MISSING)
    assert caught.value.status == 404 and str(caught.value).startswith("404 Not found")
    assert caught.value.problem["status"] == 404
    with pytest.raises(NotFound):
        [e async for e in sdk.events(MISSING)]
    out = tmp_path / "models"
    out.mkdir()
    with pytest.raises(NotFound):
        await sdk.download_model(MISSING, out / "model.pt")
    assert list(out.iterdir()) == []  # no partial file left behind


async def test_conflicts(sdk: AsyncClient, tick: Tick) -> None:
    job = await sdk.submit(job_spec())
    with pytest.raises(Conflict):  # an active job cannot be deleted
        await sdk.delete(job.id)
    assert (await sdk.cancel(job.id)).status is JobStatus.CANCELLED
    with pytest.raises(Conflict) as caught:
        await sdk.cancel(job.id)
    assert caught.value.status == 409 and "CANCELLED" in (caught.value.detail or "")
    await sdk.delete(job.id)
    with pytest.raises(NotFound):
        await sdk.get(job.id)


async def test_server_validation_errors_name_the_field(sdk: AsyncClient) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await sdk.submit(job_spec(compression={"kind": "topk", "ratio": 2.0}))
    error = caught.value
    assert error.status == 422
    assert any(line.startswith("compression.topk.ratio: ") for line in error.lines())
    assert error.errors[0].loc == ["compression", "topk", "ratio"]
    with pytest.raises(ValidationFailed) as caught:  # a malformed job id
        await sdk.get("not-a-job-id")
    assert any(line.startswith("path.job_id: ") for line in caught.value.lines())


async def test_idempotent_submit_returns_the_same_job(sdk: AsyncClient) -> None:
    first = await sdk.submit(job_spec(), idempotency_key="key-1")
    again = await sdk.submit(job_spec(), idempotency_key="key-1")
    assert again.id == first.id and (await sdk.list()).total == 1
    other = await sdk.submit(job_spec())  # a fresh key each time: a new job
    assert other.id != first.id
    with pytest.raises(Conflict, match="key-1"):
        await sdk.submit(job_spec(steps=11), idempotency_key="key-1")


async def test_registries_and_health(sdk: AsyncClient) -> None:
    kinds = {item["kind"] for item in await sdk.compressors()}
    assert {"topk", "randk", "none"} <= kinds
    assert "logistic_regression" in {item["kind"] for item in await sdk.models()}
    assert "synthetic" in {item["kind"] for item in await sdk.datasets()}
    assert {item["kind"] for item in await sdk.samplers()} == {"sgld", "sgldfp"}
    assert await sdk.registry("compressors") == await sdk.compressors()
    with pytest.raises(ValueError, match="unknown registry 'optimizers'"):
        await sdk.registry("optimizers")
    assert await sdk.health() is True


async def test_tokens(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "auth", monitor_interval_s=60.0, api_tokens="al:s3")
    async with running_app(settings) as secured:
        async with asgi_client(secured) as anonymous:
            with pytest.raises(Unauthorized) as caught:
                await anonymous.list()
            assert caught.value.status == 401
            assert await anonymous.health() is True  # probes need no token
        async with asgi_client(secured, token="wrong") as wrong:
            with pytest.raises(Unauthorized, match="unknown token"):
                await wrong.submit(job_spec())
        async with asgi_client(secured, token="s3") as alice:
            job = await alice.submit(job_spec())
            assert (await alice.get(job.id)).id == job.id


async def test_scale_a_running_job(sdk: AsyncClient, tick: Tick) -> None:
    job = sdk.job((await sdk.submit(job_spec(steps=1000, workers={"count": 2, "max": 3}))).id)
    tick(2)
    scaled = await job.scale(3)
    assert scaled.target_workers == 3 and job.last is scaled
    with pytest.raises(ValidationFailed, match=r"outside the job's \[min, max\] = \[2, 3\]"):
        await sdk.scale(job.id, 4)
    await sdk.cancel(job.id)
    with pytest.raises(Conflict):
        await sdk.scale(job.id, 2)
