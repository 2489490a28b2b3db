"""The ATOMO/QSGD benchmark runs end to end and writes its JSON and plot (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.atomo_qsgd import LRS, main


def test_atomo_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "atomo.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    methods = report["methods"]
    assert set(methods) == {"dense", "atomo_svd", "atomo_entry", "qsgd", "qsgd_whole"}
    calibration = report["calibration"]
    assert calibration["qsgd_levels"] >= 1 and calibration["entry_budget"] >= 1
    # The calibrated budgets send about as many bytes per step as spectral ATOMO.
    svd = methods["atomo_svd"]["bytes_per_step"]
    for name in ("atomo_entry", "qsgd", "qsgd_whole"):
        assert 0.3 < methods[name]["bytes_per_step"] / svd < 3.0
    assert methods["dense"]["bytes_per_step"] > 5 * svd
    assert methods["dense"]["bytes_to_target"] is not None
    assert methods["dense"]["ratio_vs_dense"] == 1.0
    for entry in methods.values():
        assert sorted({run["lr"] for run in entry["runs"]}) == sorted(LRS)
        assert [point["step"] for point in entry["runs"][0]["curve"]] == [0, 10, 20, 30]
    assert isinstance(report["claims"]["all_hold"], bool)
    assert report["machine"]["torch"]
    assert out.with_suffix(".png").stat().st_size > 10_000
