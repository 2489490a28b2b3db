"""The REST API through httpx's ASGI transport, a real SQLite store and a fake launcher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sparsetrain.jobs import Job, JobList, MetricsPage
from sparsetrain.service.app import create_app
from sparsetrain.service.monitor import Monitor
from sparsetrain.service.settings import Settings
from sparsetrain.spec import JobSpec
from sparsetrain.status import JobStatus
from tests.service.fakes import FakeLauncher
from tests.specs import DATA_KINDS, job_spec

pytestmark = pytest.mark.anyio
Tick = Callable[[int], None]


async def _submit(client: httpx.AsyncClient, **overrides: object) -> Job:
    response = await client.post("/v1/jobs", json=job_spec(**overrides))
    assert response.status_code == 201, response.text
    return Job.model_validate(response.json())


async def test_submit_run_succeed(client: httpx.AsyncClient, tick: Tick) -> None:
    job = await _submit(client)
    assert job.status is JobStatus.PENDING
    tick(1)  # submitted -> STARTING
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["status"] == "STARTING"
    tick(1)  # 4 of 10 steps -> RUNNING
    running = Job.model_validate((await client.get(f"/v1/jobs/{job.id}")).json())
    assert running.status is JobStatus.RUNNING and running.step == 4
    tick(2)  # 10 of 10 -> SUCCEEDED
    done = Job.model_validate((await client.get(f"/v1/jobs/{job.id}")).json())
    assert done.status is JobStatus.SUCCEEDED
    assert done.started_at is not None and done.finished_at is not None
    assert done.result is not None and done.result["bytes_sent"] == 10 * 200
    page = MetricsPage.model_validate((await client.get(f"/v1/jobs/{job.id}/metrics")).json())
    assert [m.step for m in page.steps] == list(range(10))
    assert len(page.evals) == 1


async def test_location_header_and_list_newest_first(client: httpx.AsyncClient) -> None:
    first = await _submit(client, name="first")
    second = await _submit(client, name="second")
    response = await client.get("/v1/jobs", params={"limit": 1})
    page = JobList.model_validate(response.json())
    assert page.total == 2 and [j.id for j in page.items] == [second.id]
    page = JobList.model_validate((await client.get("/v1/jobs?limit=1&offset=1")).json())
    assert [j.id for j in page.items] == [first.id]
    created = await client.post("/v1/jobs", json=job_spec())
    assert created.headers["location"] == f"/v1/jobs/{created.json()['id']}"


async def test_filter_by_status(client: httpx.AsyncClient, tick: Tick) -> None:
    job = await _submit(client)
    await _submit(client)
    await client.post(f"/v1/jobs/{job.id}/cancel")
    page = (await client.get("/v1/jobs", params={"status": "CANCELLED"})).json()
    assert [item["id"] for item in page["items"]] == [job.id]


async def test_idempotent_submit(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = await client.post("/v1/jobs", json=job_spec(), headers=headers)
    again = await client.post("/v1/jobs", json=job_spec(), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert (await client.get("/v1/jobs")).json()["total"] == 1
    other = await client.post("/v1/jobs", json=job_spec(steps=11), headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"


async def test_invalid_spec_is_a_problem_with_field_paths(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", json=job_spec(compression={"kind": "topk", "ratio": 2.0}, typo=1)
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    locs = [error["loc"] for error in body["errors"]]
    assert ["compression", "topk", "ratio"] in locs and ["typo"] in locs
    assert "Traceback" not in response.text


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_cancel_and_delete(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    job = await _submit(client)
    tick(2)
    assert (await client.delete(f"/v1/jobs/{job.id}")).status_code == 409
    assert launcher.deleted == []  # a running job's files stay
    cancelled = await client.post(f"/v1/jobs/{job.id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert launcher.cancelled == [job.id]
    assert (await client.post(f"/v1/jobs/{job.id}/cancel")).status_code == 409
    tick(2)  # a terminal job is never moved again
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["status"] == "CANCELLED"
    assert (await client.delete(f"/v1/jobs/{job.id}")).status_code == 204
    assert launcher.deleted == [job.id]  # its checkpoints, model and samples files
    assert (await client.get(f"/v1/jobs/{job.id}")).status_code == 404


async def test_failed_job_says_why(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    job = await _submit(client)
    tick(2)
    launcher.fail(job.id, "non-finite loss or gradient (step 3, rank 1)")
    tick(1)
    body = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert body["status"] == "FAILED"
    assert body["error"] == "non-finite loss or gradient (step 3, rank 1)"
    log = (await client.get(f"/v1/jobs/{job.id}/logs")).text
    assert "[FAILED] training failed: non-finite loss or gradient (step 3, rank 1)" in log


async def test_a_lost_supervisor_is_relaunched_from_its_checkpoint(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    launcher.skipped_step = 8  # the newest checkpoint is truncated: step 4's is used
    job = await _submit(client, steps=12)
    tick(3)  # STARTING, then 8 of 12 steps
    launcher.lose(job.id)
    tick(1)
    body = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert body["status"] == "RECOVERING" and body["restarts"] == 1
    assert launcher.relaunched == [(job.id, None)]
    tick(1)  # resumed from step 4: steps 4..7 are recorded again, 8..11 are new
    body = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert body["status"] == "RUNNING"
    tick(2)
    body = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert body["status"] == "SUCCEEDED"
    page = MetricsPage.model_validate((await client.get(f"/v1/jobs/{job.id}/metrics")).json())
    assert [m.step for m in page.steps] == list(range(12))
    log = (await client.get(f"/v1/jobs/{job.id}/logs")).text
    assert "RECOVERING" in log and "supervisor relaunched (restart 1 of at most 3)" in log
    assert not [line for line in log.splitlines() if "relaunched" in line and "step 8" in line]
    assert "skipped checkpoint step-0000000008.ckpt: truncated" in log
    assert "resumed from checkpoint step-0000000004.ckpt (step 4)" in log
    assert "recovered: training from step 4" in log


async def test_a_supervisor_lost_too_often_fails_the_job(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    job = await _submit(client, steps=1000, max_restarts=1)
    tick(2)
    launcher.lose(job.id)
    tick(2)
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["status"] == "RUNNING"
    launcher.lose(job.id)
    tick(1)
    body = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert body["status"] == "FAILED" and "supervisor is gone" in body["error"]
    assert "max_restarts=1" in body["error"] and body["restarts"] == 1


async def test_losing_every_worker_recovers_like_a_lost_supervisor(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    job = await _submit(client, steps=100)
    tick(2)
    launcher.fail(job.id, "all 2 workers were lost (step 5)", kind="WorkersLost")
    tick(1)
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["status"] == "RECOVERING"


async def test_patch_resizes_a_running_job(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    job = await _submit(client, steps=1000, workers={"count": 2, "min": 1, "max": 4})
    tick(2)
    response = await client.patch(f"/v1/jobs/{job.id}", json={"workers": {"count": 4}})
    assert response.status_code == 200, response.text
    assert response.json()["target_workers"] == 4
    assert launcher.scaled == [(job.id, 4)]
    tick(1)
    body = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert body["workers"] == 4
    log = (await client.get(f"/v1/jobs/{job.id}/logs")).text
    assert "scale requested by" in log and "2 -> 4 workers" in log and "resized to 4" in log
    tick(1)  # the supervisor's events are stored once
    log = (await client.get(f"/v1/jobs/{job.id}/logs")).text
    assert log.count("resized to 4") == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"workers": {"count": 5}}, 422),
        ({"workers": {"count": 0}}, 422),
        ({"workers": {}}, 422),
        ({"count": 3}, 422),
    ],
)
async def test_patch_refuses_sizes_outside_the_bounds(
    client: httpx.AsyncClient, body: dict[str, object], status: int
) -> None:
    job = await _submit(client, workers={"count": 2, "min": 1, "max": 4})
    response = await client.patch(f"/v1/jobs/{job.id}", json=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["target_workers"] is None


async def test_patch_of_an_ended_job_is_a_conflict(client: httpx.AsyncClient, tick: Tick) -> None:
    job = await _submit(client, workers={"count": 2, "min": 1, "max": 4})
    await client.post(f"/v1/jobs/{job.id}/cancel")
    response = await client.patch(f"/v1/jobs/{job.id}", json={"workers": {"count": 3}})
    assert response.status_code == 409 and "CANCELLED" in response.json()["detail"]


async def test_a_pending_job_starts_at_the_patched_size(
    client: httpx.AsyncClient, tick: Tick, launcher: FakeLauncher
) -> None:
    job = await _submit(client, workers={"count": 2, "min": 1, "max": 4})
    await client.patch(f"/v1/jobs/{job.id}", json={"workers": {"count": 3}})
    assert launcher.scaled == []
    tick(1)
    assert launcher.jobs[job.id].workers == 3


async def test_metrics_since_and_downsampling(client: httpx.AsyncClient, tick: Tick) -> None:
    job = await _submit(client, steps=40)
    tick(12)
    page = (await client.get(f"/v1/jobs/{job.id}/metrics", params={"since": 30})).json()
    assert [m["step"] for m in page["steps"]] == list(range(30, 40))
    page = (await client.get(f"/v1/jobs/{job.id}/metrics", params={"max_points": 5})).json()
    steps = [m["step"] for m in page["steps"]]
    assert page["downsampled"] and len(steps) <= 5 and steps[0] == 0 and steps[-1] == 39


async def test_event_stream_in_order_and_ends(client: httpx.AsyncClient, tick: Tick) -> None:
    job = await _submit(client)
    tick(4)
    response = await client.get(f"/v1/jobs/{job.id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    kinds = [b.split("event: ", 1)[1].splitlines()[0] for b in blocks]
    assert kinds[-1] == "end" and "metrics" in kinds
    statuses = [b for b in blocks if "event: status" in b]
    order = [s.split('"status":"', 1)[1].split('"', 1)[0] for s in statuses]
    assert order == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
    ids = [int(b.split("id: ", 1)[1].splitlines()[0]) for b in blocks if b.startswith("id: ")]
    assert ids == sorted(ids)
    resumed = await client.get(f"/v1/jobs/{job.id}/events", headers={"Last-Event-ID": str(ids[1])})
    assert f"id: {ids[0]}\n" not in resumed.text and f"id: {ids[2]}\n" in resumed.text


async def test_logs_and_checkpoints(client: httpx.AsyncClient, tick: Tick) -> None:
    job = await _submit(client)
    tick(4)
    logs = (await client.get(f"/v1/jobs/{job.id}/logs")).text
    assert "SUCCEEDED" in logs and logs.count("\n") >= 4
    checkpoints = (await client.get(f"/v1/jobs/{job.id}/checkpoints")).json()
    assert checkpoints[0]["step"] == 10
    missing = await client.get(f"/v1/jobs/{job.id}/model")
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"job {job.id} has no model file (yet)"


async def test_workers_log_eval_and_summary_lines(
    client: httpx.AsyncClient, launcher: FakeLauncher, tick: Tick
) -> None:
    job = await _submit(client)
    launcher.logs[job.id] = [
        ("supervisor.log", "nothing to say\n"),
        ("worker-0.log", "Traceback (most recent call last):\nRuntimeError: boom"),
    ]
    tick(4)
    workers = await client.get(f"/v1/jobs/{job.id}/logs", params={"source": "workers"})
    assert workers.status_code == 200
    assert workers.text == (
        "==> supervisor.log <==\nnothing to say\n"
        "==> worker-0.log <==\nTraceback (most recent call last):\nRuntimeError: boom\n"
    )
    bad = await client.get(f"/v1/jobs/{job.id}/logs", params={"source": "disk"})
    assert bad.status_code == 422
    events = (await client.get(f"/v1/jobs/{job.id}/logs", params={"source": "events"})).text
    last = events.splitlines()[-1]
    assert " log summary: succeeded after 10 steps in " in last
    assert last.endswith("final loss 0.5, accuracy 0.9, sent 2,000 bytes")
    rows = (await client.get(f"/v1/jobs/{job.id}")).json()["worker_details"]
    assert [(w["rank"], w["pid"], w["state"], w["last_step"]) for w in rows] == [
        (0, 1000, "training", 9),
        (1, 1001, "training", 9),
    ]


async def test_internal_errors_do_not_leak(
    client: httpx.AsyncClient, launcher: FakeLauncher
) -> None:
    job = await _submit(client)
    launcher.broken_checkpoints = True
    response = await client.get(f"/v1/jobs/{job.id}/checkpoints")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/jobs/0123456789abcdef")).status_code == 404
    assert (await client.get("/v1/jobs/../../etc")).status_code in (404, 422)
    assert (await client.get("/v1/jobs/NOT-AN-ID")).status_code == 422


async def test_data_paths_must_stay_inside_the_data_roots(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    outside = await client.post(
        "/v1/jobs", json=job_spec(data={"kind": "libsvm", "path": "../../etc/passwd"})
    )
    assert outside.status_code == 422
    assert outside.json()["errors"][0]["loc"] == ["data", "path"]
    assert str(settings.data_dir.resolve()) not in outside.text  # no server path in a 422
    inside = await client.post("/v1/jobs", json=job_spec(data={"kind": "libsvm", "path": "a.svm"}))
    assert inside.status_code == 201
    assert inside.json()["spec"]["data"]["path"] == "a.svm"  # as given, relative to the root
    escape = await client.post("/v1/jobs", json=job_spec(resume_from="/tmp/elsewhere.ckpt"))
    assert escape.status_code == 422


async def test_compressors_say_which_are_unbiased(client: httpx.AsyncClient) -> None:
    flags = {k["kind"]: k["unbiased"] for k in (await client.get("/v1/compressors")).json()}
    assert flags["topk"] is False and flags["qsgd"] is True and flags["wangni"] is True
    assert flags["randk"] is None  # unbiased only with rescale: true


async def test_registries(client: httpx.AsyncClient) -> None:
    kinds = {k["kind"] for k in (await client.get("/v1/compressors")).json()}
    assert {
        "none",
        "topk",
        "randk",
        "threshold",
        "qsgd",
        "sign",
        "wangni",
        "atomo",
        "powersgd",
    } == kinds
    models = (await client.get("/v1/models")).json()
    assert {m["kind"] for m in models} == {
        "logistic_regression",
        "linear_regression",
        "mlp",
        "cnn",
        "resnet",
        "gpt",
        "custom",
    }
    assert all("properties" in m["parameters"] for m in models)
    datasets = {d["kind"] for d in (await client.get("/v1/datasets")).json()}
    assert datasets == DATA_KINDS
    samplers = (await client.get("/v1/samplers")).json()
    assert {s["kind"] for s in samplers} == {"sgld", "sgldfp"}


async def test_health_ready_and_prometheus(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await _submit(client)
    text = (await client.get("/metrics")).text
    assert 'sparsetrain_jobs{status="PENDING"} 1' in text
    assert 'route="/v1/jobs",status="201"' in text


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/jobs/{job_id}/events" in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_tokens_guard_every_route_but_health(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, monitor_interval_s=60.0, api_tokens="alice:a-secret,bob:b-secret"
    )
    app: FastAPI = create_app(settings, launcher=FakeLauncher())
    alice = {"Authorization": "Bearer a-secret"}
    bob = {"Authorization": "Bearer b-secret"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/healthz")).status_code == 200
            denied = await client.get("/v1/jobs")
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
            wrong = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await client.get("/metrics")).status_code == 401
            job = (await client.post("/v1/jobs", json=job_spec(), headers=alice)).json()
            assert (await client.get(f"/v1/jobs/{job['id']}", headers=alice)).status_code == 200
            assert (await client.get(f"/v1/jobs/{job['id']}", headers=bob)).status_code == 404
            for source in ("events", "workers"):
                logs = f"/v1/jobs/{job['id']}/logs?source={source}"
                assert (await client.get(logs, headers=alice)).status_code == 200
                assert (await client.get(logs, headers=bob)).status_code == 404
            assert (await client.get("/v1/jobs", headers=bob)).json()["total"] == 0
            assert (
                await client.post(f"/v1/jobs/{job['id']}/cancel", headers=bob)
            ).status_code == 404


async def test_checkpoint_events_survive_a_monitor_restart(
    app: FastAPI, client: httpx.AsyncClient, launcher: FakeLauncher
) -> None:
    """A new monitor (a restarted control plane) does not record a checkpoint twice."""
    launcher.steps_per_poll = 4
    job = await _submit(client, steps=20)
    state = app.state.sparsetrain
    for _ in range(3):
        state.monitor.tick()
    before = [e.message for e in state.store.events(job.id) if e.kind == "checkpoint"]
    assert len(before) == 2  # steps 4 and 8
    restarted = Monitor(state.store, launcher)
    restarted.tick()
    after = [e.message for e in state.store.events(job.id) if e.kind == "checkpoint"]
    assert after[:2] == before and len(after) == 3  # only step 12 is new


async def test_custom_code_is_refused_unless_allowed(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    custom = job_spec(model={"kind": "custom", "factory": "os:system"})
    refused = await client.post("/v1/jobs", json=custom)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["model", "kind"]
    settings = Settings(data_dir=tmp_path / "open", monitor_interval_s=60.0, allow_custom_code=True)
    app = create_app(settings, launcher=FakeLauncher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as open_client:
            assert (await open_client.post("/v1/jobs", json=custom)).status_code == 201


async def test_a_job_cancelled_while_being_started_leaves_nothing_running(
    app: FastAPI, client: httpx.AsyncClient, launcher: FakeLauncher
) -> None:
    job = await _submit(client)
    state = app.state.sparsetrain
    original = launcher.submit

    def submit_then_lose_the_race(job_id: str, spec: JobSpec, target: int | None = None) -> None:
        original(job_id, spec, target)
        state.store.transition(job_id, JobStatus.CANCELLED, "cancelled by a racing request")

    launcher.submit = submit_then_lose_the_race  # type: ignore[method-assign]
    state.monitor.tick()
    assert launcher.cancelled == [job.id] and job.id not in launcher.jobs
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["status"] == "CANCELLED"
