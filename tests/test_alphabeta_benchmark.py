"""The alpha-beta probe runs on the network harness (real namespaces, shaped links, a gloo
group across them) and measures a bandwidth near the shaped rate; the scaling benchmark
reads its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.alphabeta import fit, main, measured
from tests.harness_gate import require_harness


def test_fit_reads_alpha_from_the_smallest_size_and_beta_from_the_largest_two() -> None:
    alpha, beta = fit({8: 0.001, 1000: 0.0015, 2000: 0.0025})
    assert alpha == 0.001 and beta == pytest.approx(1e-6)


def test_probe_on_a_shaped_link(tmp_path: Path) -> None:
    require_harness()
    out = tmp_path / "alphabeta.json"
    assert main(["--smoke", "--worlds", "2", "--rates", "100mbit", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["world"] == 2 and len(row["ranks"]) == 2
    assert 0 < row["alpha_s"] < 0.05
    # 100 Mbit/s is slow enough for 2 shared cores to keep up: close to the shaped rate,
    # never faster than it.
    assert 0.9 <= row["beta_over_nominal"] < 3.0
    alpha, beta, source = measured(out, "100mbit")
    assert (alpha, beta) == (row["alpha_s"], row["beta_s_per_byte"]) and "W = 2" in source
    with pytest.raises(ValueError, match="1gbit"):
        measured(out, "1gbit")
    assert not list(tmp_path.glob(".alphabeta-work*"))  # its scratch files are gone
