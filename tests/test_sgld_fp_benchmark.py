"""The SGLD-FP benchmark runs end to end and writes its JSON and plot (tiny sizes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.sgld_fp import METHODS, main


def test_sgld_fp_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sgld_fp.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["baseline"] == "sgld"
    assert [row["n"] for row in report["rows"]] == [200, 800]
    for row in report["rows"]:
        for method in METHODS:
            result = row[method]
            assert result["samples"] == 500
            assert all(math.isfinite(result[key]) for key in ("mean_error", "cov_error", "spread"))
        assert row["sgld"]["cov_error_vs_sgld"] == 1.0
    assert out.with_suffix(".png").stat().st_size > 10_000
