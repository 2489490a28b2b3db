"""The Wangni benchmark runs end to end and writes its JSON and plot (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.wangni import DENSITY_GRID, EPS_GRID, main


def test_wangni_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "wangni.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["vectors"]) == {"student_t2", "lognormal", "logistic_grad"}
    for result in report["vectors"].values():
        assert [r["eps"] for r in result["equal_variance"]] == list(EPS_GRID)
        assert [r["density"] for r in result["equal_density"]] == list(DENSITY_GRID)
        for row in result["equal_variance"]:
            assert 0 < row["ratio"] <= 1.0 + 1e-9  # never more coordinates than uniform
        for row in result["equal_density"]:
            assert 0 < row["ratio"] <= 1.0 + 1e-9  # never more variance than uniform
    heavy = report["vectors"]["lognormal"]["equal_density"]
    assert all(row["ratio"] < 0.5 for row in heavy)
    assert out.with_suffix(".png").stat().st_size > 10_000
