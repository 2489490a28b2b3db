"""The exchange benchmark runs end to end (smoke size) and writes its JSON and plot.

``main`` starts a local Ray only when none is running in this process (the integration
suite's session fixture may already have one) and shuts down only the one it started.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import ray
import torch

from benchmarks import sparse_wire
from benchmarks.exchange import METHODS, main


def test_exchange_benchmark_smoke(tmp_path: Path) -> None:
    had_ray = ray.is_initialized()
    out = tmp_path / "x.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    assert ray.is_initialized() == had_ray

    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    assert report["device"] == "cpu"
    assert all("staging" not in row for row in report["grid"])
    grid = {(g["d"], g["W"], g["method"]): g for g in report["grid"]}
    assert set(grid) == {(10_000, 2, method) for method in METHODS}
    for row in grid.values():
        for key in ("exchange_s", "decode_apply_s", "compress_s", "gloo_allreduce_s"):
            assert row[key] > 0, (row["method"], key)
        assert row["ratio_vs_gloo"] == row["exchange_s"] / row["gloo_allreduce_s"]
    # 24-byte header + k entries of (fp32 value, delta-coded index of 1 or 2 bytes: d < 2**14)
    for method, k in (("topk_1pct", 100), ("topk_0.1pct", 10)):
        assert 24 + k * 5 <= grid[(10_000, 2, method)]["bytes_per_worker"] <= 24 + k * 6
    assert grid[(10_000, 2, "dense_fp32")]["bytes_per_worker"] == 24 + 10_000 * 4

    (baseline,) = report["baseline"]
    assert (baseline["d"], baseline["W"]) == (10_000, 2)
    assert baseline["gloo_allreduce_s"] > 0

    runtime = report["runtime"]
    assert runtime["steps"] == 20
    assert runtime["per_step_wall_ms"] > 0
    assert math.isfinite(runtime["overhead_ms"])

    wire = report["wire"]
    assert {(r["d"], r["ratio"]) for r in wire["topk"]} == {(50_000, 0.01), (50_000, 0.001)}
    assert all(r["torch_topk_s"] > 0 and r["sampled_topk_s"] > 0 for r in wire["topk"])
    coding = {(r["ratio"], r["value_dtype"], r["index_coding"]): r for r in wire["coding"]}
    assert len(coding) == len(wire["coding"]) == 8
    plain, delta = coding[(0.01, "float16", "plain")], coding[(0.01, "float16", "delta")]
    assert plain["nbytes"] == 24 + 500 * (4 + 2)
    assert delta["nbytes"] < plain["nbytes"] and delta["encode_s"] > 0 and delta["decode_s"] > 0

    targets = report["targets"]
    assert set(targets) == {
        "topk_1pct_d10M_W2_ratio",
        "runtime_overhead_ms",
        "topk_1pct_fp16_delta_share_of_dense_d50000",
        "sampled_topk_time_ratio_1pct_d50000",
    }
    assert targets["topk_1pct_d10M_W2_ratio"]["target"] == 0.3
    assert targets["topk_1pct_d10M_W2_ratio"]["value"] is None  # d = 10M is not in smoke mode
    assert targets["runtime_overhead_ms"]["target"] == 5.0
    assert targets["runtime_overhead_ms"]["value"] == runtime["overhead_ms"]
    assert isinstance(targets["runtime_overhead_ms"]["met"], bool)

    assert out.with_suffix(".png").stat().st_size > 5_000


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_mode_refuses_to_run_without_a_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--smoke", "--device", "cuda", "--out", str(tmp_path / "x.json")])
    assert info.value.code == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_the_wire_section_runs_alone_without_ray(tmp_path: Path) -> None:
    out = tmp_path / "wire.json"
    assert sparse_wire.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and report["repeats"] == 3
    assert {r["d"] for r in report["wire"]["coding"]} == {50_000}
    share = report["targets"]["topk_1pct_fp16_delta_share_of_dense_d50000"]
    assert share["met"] is True and share["value"] <= 0.01
