"""The scaling benchmark runs end to end (smoke sizes) and its cost model meets the issue's
traffic bounds."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.scaling import WORLDS, main


def test_scaling_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    table = report["cost_model"]["table"]
    for path in ("gtopk", "partitioned"):
        assert [p["world"] for p in table["topk_1pct"]["paths"][path]] == WORLDS
    goals = report["targets"]
    assert goals["topk_entries_per_worker_W1024"]["met"] is True
    assert goals["allreduce_bytes_over_payload_W1024"]["met"] is True
    ring = table["randk_shared_1pct"]["paths"]["allreduce"]
    gather = table["randk_shared_1pct"]["paths"]["allgather"]
    assert ring[-1]["received_bytes"] < gather[-1]["received_bytes"] / 100
    assert [row["path"] for row in report["convergence"]] == ["partitioned"]
    assert report["measured"] == []
    assert out.with_suffix(".png").stat().st_size > 10_000
