"""The API load benchmark runs end to end (smoke size): a real server process, real Ray.

``main`` reuses the Ray connection this process already has (the integration suite's session
fixture may have one), joins ``RAY_ADDRESS`` when set, or starts and stops a local cluster;
either way the process's Ray state is the same afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from benchmarks.api_load import HEALTHZ, ROUTES, TARGET_MS, main

pytestmark = pytest.mark.ray


def test_api_load_smoke(tmp_path: Path) -> None:
    had_ray = ray.is_initialized()
    out = tmp_path / "load.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    assert ray.is_initialized() == had_ray

    report = json.loads(out.read_text())
    assert report["benchmark"] == "api_load" and report["mode"] == "smoke"
    assert report["config"]["clients"] == 5 and report["config"]["duration_s"] == 2.0

    load = report["load"]
    assert load["requests"] > 0 and load["requests_per_s"] > 0
    assert load["server_errors"] == 0  # no 5xx on any route

    routes = report["routes"]
    assert set(routes) == set(ROUTES)
    for route, stats in routes.items():
        assert stats["server_errors"] == 0, route
        assert set(stats) >= {"n", "status", "p50_ms", "p99_ms", "max_ms", "p99_vs_healthz"}
        if stats["p50_ms"] is not None:
            assert 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"], route
    assert routes[HEALTHZ]["n"] > 0
    assert report["baseline"] == {
        "route": HEALTHZ,
        "p50_ms": routes[HEALTHZ]["p50_ms"],
        "p99_ms": routes[HEALTHZ]["p99_ms"],
    }
    assert routes[HEALTHZ]["p99_vs_healthz"] == 1.0

    jobs = report["jobs"]
    assert jobs["submitted"] >= 1  # the warm-up job, at least
    assert jobs["lost"] == 0 and jobs["found"] == jobs["submitted"]
    assert jobs["list_total"] >= jobs["submitted"]

    targets = report["targets"]
    assert set(targets) == {f"p99_ms {route}" for route in TARGET_MS} | {
        "errors (5xx + transport)",
        "lost_jobs",
    }
    for name, target in targets.items():
        assert set(target) == {"value", "target", "met"}, name
        assert isinstance(target["met"], bool), name
    assert targets["lost_jobs"] == {"value": 0, "target": 0, "met": True}
    assert targets["p99_ms POST /v1/jobs"]["target"] == 150.0
    assert targets["p99_ms GET /v1/jobs/{id}"]["target"] == 50.0
    assert targets["p99_ms GET /v1/jobs"]["value"] == routes["GET /v1/jobs"]["p99_ms"]
    assert "GET /healthz" in report["server_side"]  # the server's own histograms, scraped

    assert out.with_suffix(".png").stat().st_size > 5_000
