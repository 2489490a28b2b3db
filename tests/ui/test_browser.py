"""The web UI in a real headless Chromium against the real control plane (a server process,
SQLite, the session's local Ray cluster) with API tokens on.

Screenshots go to ``results/ui/`` and stay there as the run's artifacts.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparsetrain._progress import _size
from tests.server_process import Server, serving
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "results" / "ui"
TOKEN = "ui-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE_S = 60.0
WAIT_MS = 45_000  # the page's own bounded waits
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Both jobs run far longer than the test; the test cancels them.
LONG_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 2000, "d": 50, "test_fraction": 0.2},
    "schedule": {"kind": "constant", "lr": 0.2},
    "batch_size": 16,
    "steps": 1_000_000,
    "eval": {"every": 100},
    "seed": 7,
}
ELASTIC = job_spec(
    LONG_JOB,
    name="topk-elastic",
    compression={"kind": "topk", "ratio": 0.1},
    workers={"count": 1, "min": 1, "max": 2},
    checkpoint={"every": 500},
)
DENSE = job_spec(
    LONG_JOB, name="dense-baseline", compression={"kind": "none"}, workers={"count": 1}
)


def _skip_or_fail(reason: str) -> None:
    """CI must run the browser test: there a missing browser fails it instead of skipping."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser test may not skip)")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile in Debian's ``chromium`` driven by Playwright."""
    chromium = shutil.which("chromium")
    if chromium is None:
        _skip_or_fail("chromium is not installed (`make test` installs it when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (the dev extra has it)")
    driver = sync_playwright().start()
    try:
        context = driver.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
    finally:
        driver.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serving(tmp_path / "data", SPARSETRAIN_API_TOKENS=f"alice:{TOKEN}")


def _api(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", headers=AUTH, timeout=30, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def _until(server: Server, job_id: str, check: Callable[[dict[str, Any]], bool]) -> Any:
    """Poll the job through the API until ``check(job)`` holds (bounded)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        job = _api(server, "GET", f"/v1/jobs/{job_id}")
        if check(job):
            return job
        assert job["status"] != "FAILED", job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the condition: {job}")


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def _sign_in(page: Any, server: Server, job_ids: list[str]) -> None:
    """Without a token the page shows the prompt and no job data; a wrong token is refused;
    the right one opens the jobs list, and never appears in a URL."""
    page.goto(f"{server.url}/")
    assert page.url == f"{server.url}/ui"
    page.locator("#token-input").wait_for(state="visible", timeout=WAIT_MS)
    assert page.locator("#view").inner_html() == ""
    assert page.locator("#jobs-table").count() == 0
    content = page.content()
    assert not any(job_id in content for job_id in job_ids)
    _shot(page, "token-prompt.png")

    page.fill("#token-input", "not-the-token")
    page.click("#token-form button[type=submit]")
    page.locator("#token-error").wait_for(state="visible", timeout=WAIT_MS)
    assert "did not accept" in page.inner_text("#token-error")
    assert page.locator("#jobs-table").count() == 0

    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    page.locator("#jobs-table").wait_for(timeout=WAIT_MS)
    assert TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('sparsetrain.token')") == TOKEN


def _check_list(page: Any, elastic: str, dense: str) -> None:
    for job_id in (elastic, dense):
        row = page.locator(f'tr[data-job-id="{job_id}"][data-status="RUNNING"]')
        row.wait_for(timeout=WAIT_MS)
    # The list's loss and bytes come from each job's last step record.
    page.locator(f'tr[data-job-id="{elastic}"] [data-field="bytes"][data-value]').wait_for(
        timeout=WAIT_MS
    )
    _shot(page, "jobs-list.png")


def _watch_the_curve_grow(page: Any) -> None:
    points = "Number(document.querySelector('#chart-loss').dataset.points || 0)"
    page.wait_for_function(f"() => {points} > 0", timeout=WAIT_MS)
    first = page.evaluate(points)
    page.wait_for_function(f"n => {points} > n", arg=first, timeout=WAIT_MS)
    page.locator("#chart-accuracy g.series").first.wait_for(timeout=WAIT_MS)
    page.locator('#timeline li[data-kind="checkpoint"]').first.wait_for(timeout=WAIT_MS)
    page.locator("#checkpoints tbody tr").first.wait_for(timeout=WAIT_MS)


def _compare_with_the_api(page: Any, server: Server, job_id: str) -> None:
    """The loss and bytes the page shows for its latest step are the API's for that step."""
    shown = page.evaluate(  # one read: the page updates between separate calls
        """() => {
            const bytes = document.querySelector('#stat-bytes');
            const loss = document.querySelector('#stat-loss');
            return {step: bytes.dataset.step, lossStep: loss.dataset.step,
                    bytes: bytes.dataset.bytes, bytesText: bytes.textContent,
                    loss: loss.textContent};
        }"""
    )
    step = int(shown["step"])
    assert shown["lossStep"] == shown["step"]
    page_ = _api(server, "GET", f"/v1/jobs/{job_id}/metrics", params={"since": step})
    record = page_["steps"][0]
    assert record["step"] == step
    assert int(shown["bytes"]) == record["bytes_total"]
    assert shown["bytesText"] == _size(record["bytes_total"])
    assert float(shown["loss"]) == pytest.approx(record["loss"], rel=1e-3)


def _overlay_the_baseline(page: Any, dense: str) -> None:
    page.click("#baseline-picker summary")
    page.check(f'#baseline-picker label[data-job-id="{dense}"] input')
    page.locator('#chart-loss g.series[data-label*="(dense)"]').wait_for(timeout=WAIT_MS)
    page.click("#baseline-picker summary")
    page.click('button[data-axis="bytes"]')
    page.locator("#chart-loss .axis-title", has_text="bytes sent").wait_for(timeout=WAIT_MS)
    page.click('button[data-axis="step"]')
    page.locator("#chart-loss .axis-title", has_text="step").wait_for(timeout=WAIT_MS)


def _scale_to_two(page: Any, server: Server, job_id: str) -> None:
    page.fill("#scale-input", "2")
    page.click("#scale-button")
    _until(server, job_id, lambda job: job["target_workers"] == 2)
    _until(server, job_id, lambda job: job["workers"] == 2)
    page.locator('#stat-workers[data-live="2"]').wait_for(timeout=WAIT_MS)
    page.locator('#timeline li[data-kind="resize"]').first.wait_for(timeout=WAIT_MS)
    job = _until(
        server, job_id, lambda job: sum(bool(w["pid"]) for w in job["worker_details"] or []) == 2
    )
    for worker in job["worker_details"]:  # the workers table says where each one runs
        row = page.locator("#workers tr", has_text=str(worker["pid"]))
        row.locator("td", has_text=worker["node_ip"]).wait_for(timeout=WAIT_MS)


def _cancel_from_its_page(page: Any, server: Server, job_id: str) -> None:
    page.click("a.back")
    page.click(f'tr[data-job-id="{job_id}"] .job-name a')
    page.click("#cancel-button")
    assert _api(server, "GET", f"/v1/jobs/{job_id}")["status"] == "RUNNING"  # asks first
    page.click("#cancel-confirm")
    _until(server, job_id, lambda job: job["status"] == "CANCELLED")
    page.locator('#job-status[data-status="CANCELLED"]').wait_for(timeout=WAIT_MS)
    assert page.locator("#cancel-button").count() == 0
    page.click("a.back")
    page.click('.chip[data-status="CANCELLED"]')
    page.locator(f'tr[data-job-id="{job_id}"]').wait_for(timeout=WAIT_MS)
    assert page.locator("tr.job-row").count() == 1


def test_the_ui_follows_scales_and_cancels_jobs(browser: Any, server: Server) -> None:
    elastic = _api(server, "POST", "/v1/jobs", json=ELASTIC)["id"]
    dense = _api(server, "POST", "/v1/jobs", json=DENSE)["id"]
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        _sign_in(page, server, [elastic, dense])
        _check_list(page, elastic, dense)

        page.click(f'tr[data-job-id="{elastic}"] .job-name a')
        page.locator('#job-status[data-status="RUNNING"]').wait_for(timeout=WAIT_MS)
        _watch_the_curve_grow(page)
        _overlay_the_baseline(page, dense)
        _compare_with_the_api(page, server, elastic)
        _scale_to_two(page, server, elastic)
        page.locator("#toast").wait_for(state="hidden", timeout=WAIT_MS)
        _shot(page, "job-page.png")
        page.set_viewport_size({"width": 390, "height": 844})
        _shot(page, "job-page-narrow.png")
        page.set_viewport_size({"width": 1280, "height": 900})

        _cancel_from_its_page(page, server, dense)
        # The 401s of the sign-in are expected; anything else the page logged is a defect.
        assert [e for e in errors if "status of 401" not in e] == []
    except BaseException:
        _shot(page, "failure.png")
        raise
    finally:
        page.close()
        for job_id in (elastic, dense):
            httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=AUTH, timeout=30)
