"""The stale-gradient SG-MCMC benchmark runs end to end and writes its JSON and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.stale_sgmcmc import TAUS, main


def test_stale_sgmcmc_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "stale.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [row["tau"] for row in rows] == list(TAUS)
    assert [row["max_staleness_seen"] for row in rows] == list(TAUS)
    for row in rows:
        for name in ("norm2", "w0"):
            assert math.isfinite(row[name]["bias"]) and row[name]["variance"] > 0
    assert rows[0]["norm2"]["variance_vs_tau0"] == 1.0
    assert out.with_suffix(".png").stat().st_size > 10_000
