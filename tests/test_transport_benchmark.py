"""The transport benchmark runs end to end on the session's Ray cluster and writes its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.transport import COMPRESSIONS, TRANSPORTS, main

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_transport_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "transport.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == set(COMPRESSIONS)
    for row in report["results"].values():
        for transport in TRANSPORTS:
            assert row[transport]["steady_s_per_step"] > 0
        ratio = row["collective"]["steady_s_per_step"] / row["allgather"]["steady_s_per_step"]
        assert row["ratio_collective_vs_allgather"] == pytest.approx(ratio)
        # The same job moves the same bytes either way.
        assert row["collective"]["bytes_per_worker"] == row["allgather"]["bytes_per_worker"]
