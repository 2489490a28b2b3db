"""Byte totals stay exact when ``/metrics`` downsamples: records carry the running total and
every table, plot and summary reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsetrain._plot import curves
from sparsetrain.cli import main
from sparsetrain.client import Client
from sparsetrain.metrics import EvalMetrics, StepMetrics, cumulative_bytes
from tests.api.conftest import LiveServer

PER_STEP = 288  # what one step of the 30k-step job sent: 8.64 MB in all


def _record(step: int, with_total: bool = True) -> StepMetrics:
    return StepMetrics(
        step=step,
        loss=1.0 / (step + 1),
        lr=0.1,
        bytes_sent=PER_STEP,
        bytes_total=PER_STEP * (step + 1) if with_total else None,
        bytes_per_worker=[PER_STEP // 2] * 2,
        density=0.01,
        compute_s=0.0,
        compress_s=0.0,
        exchange_s=0.0,
    )


def _thinned(n: int, keep: int) -> list[StepMetrics]:
    """Every ``n // keep``-th record of an ``n``-step run, and the last (as the store keeps)."""
    return [_record(step) for step in [*range(0, n - 1, n // keep), n - 1]]


def test_cumulative_bytes_of_a_downsampled_run_is_exact() -> None:
    records = _thinned(30_000, 2_000)
    assert cumulative_bytes(records)[-1] == 30_000 * PER_STEP == 8_640_000
    # Records stored before bytes_total existed: the running sum of what is there.
    assert cumulative_bytes([_record(0, False), _record(1, False), _record(2)]) == [
        PER_STEP,
        2 * PER_STEP,
        3 * PER_STEP,
    ]


def test_the_bytes_curve_of_a_downsampled_run_ends_at_the_bytes_sent() -> None:
    records = _thinned(30_000, 2_000)
    evals = [EvalMetrics(step=s, train_loss=1.0, train_accuracy=0.5) for s in (0, 15_000, 30_000)]
    run = curves(records, evals)
    assert run.steps == [0, 15_000, 30_000]
    assert run.megabytes[0] == 0.0 and run.megabytes[-1] == pytest.approx(8.64)
    # step 15,000 falls between two kept records: the one before it (step 14,985) counts
    assert run.megabytes[1] == pytest.approx(14_986 * PER_STEP / 1e6)
    by_steps = curves(records, [])
    assert by_steps.steps[-1] == 30_000 and by_steps.megabytes[-1] == pytest.approx(8.64)


def test_downsampled_metrics_say_so_and_keep_the_totals(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(live.url) as client:
        job = client.submit(
            {
                "model": {"kind": "logistic_regression"},
                "data": {"kind": "synthetic", "n": 200, "d": 20},
                "steps": 40,
            }
        )
        live.tick(12)  # the fake launcher runs 4 steps, each 200 bytes, per pass
        assert client.get(job.id).status.value == "SUCCEEDED"
        page = client.metrics(job.id, max_points=5)
        assert page.downsampled and len(page) <= 5 and page.step_records == 40
        assert page.bytes_sent == 40 * 200
        assert client.metrics(job.id).bytes_sent == 40 * 200
    assert main(["--url", live.url, "metrics", job.id, "--max-points", "5"]) == 0
    captured = capsys.readouterr()
    assert f"({len(page)} of 40 step records, evenly spaced" in captured.err
    last = captured.out.splitlines()[len(page)].split()
    assert last[0] == "39" and last[4] == str(40 * 200)  # step ... sent so far
