"""The resize benchmark runs end to end on the session's Ray cluster and writes its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.resize import main

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_resize_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "resize.json"
    assert main(["--reps", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["events"]) == {
        f"{event}_{variant}"
        for event in ("scale_up", "scale_down", "worker_loss")
        for variant in ("cold", "warm")
    }
    restart = report["restart_baseline"]["median_s"]
    assert restart > 0
    for event in report["events"].values():
        assert 0 < event["median_s"] < 60
        assert event["ratio_to_restart"] == pytest.approx(event["median_s"] / restart)
    # A hot spare joins at the next step boundary; a cold joiner starts a process first.
    assert (
        report["events"]["scale_up_warm"]["median_s"]
        < report["events"]["scale_up_cold"]["median_s"]
    )
    assert out.with_suffix(".png").stat().st_size > 10_000
