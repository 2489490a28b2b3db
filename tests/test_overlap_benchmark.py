"""The overlap benchmark runs end to end and writes its JSON and plot (tiny sizes), and its
ablation really turns the lookahead off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.overlap import COMPRESSIONS, MODES, _without_lookahead, main, spec_for
from sparsetrain.workers import simulate


@pytest.mark.slow
def test_overlap_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "overlap.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["summary"]) == {f"{c} {m}" for c in COMPRESSIONS for m in MODES}
    assert len(report["runs"]) == len(COMPRESSIONS) * len(MODES) * 2
    for entry in report["summary"].values():
        assert len(entry["per_seed"]) == 2
        assert entry["median_steps"] == pytest.approx(
            sorted(entry["per_seed"])[0] / 2 + sorted(entry["per_seed"])[1] / 2
        )
    assert set(report["targets"]) == {f"{c} overlap median steps over plain" for c in COMPRESSIONS}
    assert out.with_suffix(".png").stat().st_size > 0


def test_the_ablation_differs_from_the_product_only_by_the_lookahead() -> None:
    spec = spec_for("dense", "overlap", seed=0, steps=30, hidden=[16])
    with _without_lookahead(True):
        ablated = simulate(spec)
    product = simulate(spec)
    with _without_lookahead(False):
        again = simulate(spec)
    assert product.params is not None and ablated.params is not None and again.params is not None
    assert not torch.equal(product.params, ablated.params)
    assert torch.equal(product.params, again.params)
