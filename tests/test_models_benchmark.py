"""The GPT/ResNet benchmark runs end to end (tiny sizes) and writes its JSON and plot; its
ratios are computed from its own runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.models import SIZES, main


def test_models_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    size = SIZES["smoke"]
    assert set(report["tasks"]) == {"gpt", "resnet"}
    for name, task in report["tasks"].items():
        runs = task["runs"]
        assert set(runs) == {
            "adamw_dense",
            "adamw_topk_ef",
            "adamw_topk2.5_fp16",
            "sgd_memsgd_topk",
        }
        assert task["model"]["kind"] == name
        dense = runs["adamw_dense"]
        for run, result in runs.items():
            final = result["final"]
            assert final["step"] == size.steps[name]
            assert [p["step"] for p in result["curve"]] == [0, 3, 6]
            ratios = task["ratios"][run]
            assert ratios["loss"] == pytest.approx(final["test_loss"] / dense["final"]["test_loss"])
            assert ratios["accuracy"] == pytest.approx(
                final["test_accuracy"] / dense["final"]["test_accuracy"]
            )
            assert ratios["bytes"] == pytest.approx(result["bytes"] / dense["bytes"])
        if name == "gpt":
            assert task["ratios"]["adamw_topk_ef"]["perplexity"] == pytest.approx(
                runs["adamw_topk_ef"]["final"]["test_perplexity"]
                / dense["final"]["test_perplexity"]
            )
        else:
            assert task["ratios"]["adamw_dense"]["perplexity"] is None
        assert task["ratios"]["adamw_dense"]["bytes"] == 1.0
        # Top-1%: after the dense warm-up, far fewer bytes than dense; MEM-SGD never dense.
        assert task["ratios"]["adamw_topk_ef"]["bytes_after_warmup"] < 0.1
        assert task["ratios"]["sgd_memsgd_topk"]["bytes"] < 0.1
        topk = runs["adamw_topk_ef"]
        assert topk["optimizer"]["dense_warmup_steps"] == size.warmup(name)
        # Top-2.5% in fp16 has no dense warm-up: all its bytes are compressed ones, more
        # than top-1%'s after the warm-up and still a small fraction of dense's.
        wide = task["ratios"]["adamw_topk2.5_fp16"]
        assert runs["adamw_topk2.5_fp16"]["optimizer"]["dense_warmup_steps"] == 0
        assert wide["bytes"] == wide["bytes_after_warmup"]
        assert task["ratios"]["adamw_topk_ef"]["bytes_after_warmup"] < wide["bytes"] < 0.1
    targets = report["targets"]
    assert set(targets) == {
        f"{t}/{r}"
        for t in ("gpt", "resnet")
        for r in ("adamw_topk_ef", "adamw_topk2.5_fp16", "sgd_memsgd_topk")
    }
    assert all(isinstance(t["met"], bool) for t in targets.values())
    assert report["machine"]["torch"]
    assert out.with_suffix(".png").stat().st_size > 10_000
