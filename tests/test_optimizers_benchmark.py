"""The optimizers benchmark runs end to end and writes its JSON and plot (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.optimizers import COMPRESSED_ADAMW, TASKS, _configs, main


@pytest.mark.slow
def test_optimizers_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "optimizers.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["tasks"]) == set(TASKS)
    for task in report["tasks"].values():
        runs, ratios = task["runs"], task["ratios"]
        assert set(runs) == set(_configs(5))
        dense = runs["adamw_dense"]
        for name, run in runs.items():
            assert ratios[name]["bytes_ratio"] == pytest.approx(run["bytes"] / dense["bytes"])
            assert ratios[name]["train_loss_ratio"] == pytest.approx(
                run["final_train_loss"] / dense["final_train_loss"]
            )
        # top-1% with fp16 values after the dense warm-up: far fewer bytes than dense
        assert ratios["adamw_topk"]["bytes_ratio_after_warmup"] < 0.05
        assert (
            ratios["adamw_topk"]["bytes_ratio"] > ratios["adamw_topk"]["bytes_ratio_after_warmup"]
        )
        # top-2% sends about twice top-1%'s bytes after the warm-up, still under 5% of dense
        top1 = ratios["adamw_topk"]["bytes_ratio_after_warmup"]
        top2 = ratios["adamw_topk2"]["bytes_ratio_after_warmup"]
        assert 1.5 * top1 < top2 < 0.05
        for run in runs.values():
            cumulative = [p["cumulative_bytes"] for p in run["curve"]]
            assert cumulative == sorted(cumulative) and 0 < cumulative[-1] <= run["bytes"]
    assert set(report["targets"]) == {
        f"{task}/{config}" for task in TASKS for config in COMPRESSED_ADAMW
    }
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.slow
def test_optimizers_benchmark_runs_only_the_tasks_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "digits.json"
    assert main(["--smoke", "--tasks", "mlp_digits", "--seed", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["tasks"]) == ["mlp_digits"]
    assert report["seed"] == 3
    assert report["machine"]["torch_threads"] == 1
    assert {name.split("/")[0] for name in report["targets"]} == {"mlp_digits"}
