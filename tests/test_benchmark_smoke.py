"""The paper benchmark runs end to end and writes its JSON and plot (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.paper_memsgd import main


def test_paper_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "paper.json"
    assert main(["--smoke", "--out", str(out), "--evals", "10"]) == 0
    report = json.loads(out.read_text())
    problem = report["problems"]["synthetic"]
    methods = problem["methods"]
    assert set(methods) == {"sgd", "memsgd_topk", "memsgd_topk_fp32", "memsgd_randk", "randk_nomem"}
    assert methods["sgd"]["steps_to_target"] == problem["sgd_steps"]
    assert methods["sgd"]["bytes_ratio_vs_sgd"] == 1.0
    assert problem["optimum"] <= problem["target_loss"]
    topk_bytes = methods["memsgd_topk"]["curve"][-1]["bytes"]
    assert topk_bytes < methods["sgd"]["curve"][-1]["bytes"]
    assert out.with_suffix(".png").stat().st_size > 10_000
