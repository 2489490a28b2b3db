"""Tests for ``sparsetrain.workers.training.simulator.simulate``: W logical workers in one
process."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import (
    AveragingSpec,
    ConstantLR,
    DenseSpec,
    EvalSpec,
    ExchangeSpec,
    InverseTimeLR,
    JobSpec,
    LogisticRegressionSpec,
    MLPSpec,
    RandKSpec,
    SyntheticSpec,
    TopKSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate, simulate_async
from sparsetrain.workers.compression import Payload, encode
from sparsetrain.workers.compression.payload import HEADER_NBYTES
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.training.step import MeanApplier
from tests.specs import SMALL_JOB, job_spec_model

TIMING_FIELDS = {"compute_s", "compress_s", "exchange_s", "wait_s", "step_s", "other_s"}


job = partial(job_spec_model, SMALL_JOB, {"compression": TopKSpec(ratio=0.1)})


def step_records(steps: Sequence[StepMetrics]) -> list[dict[str, Any]]:
    """Step metrics without the wall-clock timings."""
    return [record.model_dump(exclude=TIMING_FIELDS) for record in steps]


def eval_steps(evals: Sequence[EvalMetrics]) -> list[int]:
    return [record.step for record in evals]


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compression",
    [TopKSpec(ratio=0.1), RandKSpec(ratio=0.1), RandKSpec(ratio=0.1, shared_seed=True)],
    ids=["topk", "randk", "randk-shared"],
)
def test_same_spec_is_bit_identical(compression: Any) -> None:
    spec = job(compression=compression, model=MLPSpec(hidden=[8]), eval=EvalSpec(every=7))
    first, second = simulate(spec), simulate(spec)
    assert first.params is not None and second.params is not None
    assert torch.equal(first.params, second.params)
    assert step_records(first.steps) == step_records(second.steps)
    assert [e.model_dump() for e in first.evals] == [e.model_dump() for e in second.evals]
    for a, b in zip(first.memories, second.memories, strict=True):
        assert a is not None and b is not None
        assert torch.equal(a, b)


def test_different_seed_gives_different_params() -> None:
    a = simulate(job(seed=3)).params
    b = simulate(job(seed=4)).params
    assert a is not None and b is not None
    assert not torch.equal(a, b)


# --- metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "per_worker_bytes"),
    [
        (TopKSpec(k=5, index_coding="plain"), HEADER_NBYTES + 5 * (4 + 4)),
        (TopKSpec(k=5, value_dtype="float16", index_coding="plain"), HEADER_NBYTES + 5 * (4 + 2)),
        (TopKSpec(k=5), HEADER_NBYTES + 5 * (1 + 4)),  # d = 50: every gap fits one byte
        (RandKSpec(k=5, shared_seed=True), HEADER_NBYTES + 8 + 5 * 4),
        (DenseSpec(), HEADER_NBYTES + 50 * 4),
    ],
    ids=["topk", "topk-fp16", "topk-delta", "randk-shared", "dense"],
)
def test_bytes_and_density(
    monkeypatch: pytest.MonkeyPatch, compression: Any, per_worker_bytes: int
) -> None:
    """``bytes_sent`` sums the payloads' exact wire sizes; ``density`` is nnz / d."""
    payloads: list[list[Payload]] = []
    original = MeanApplier.apply

    def spy(self: MeanApplier, flat: torch.Tensor, sent: Sequence[Payload]) -> None:
        payloads.append(list(sent))
        original(self, flat, sent)

    monkeypatch.setattr(MeanApplier, "apply", spy)
    W = 3
    result = simulate(job(compression=compression, workers=WorkersSpec(count=W), steps=6))

    assert len(payloads) == len(result.steps) == 6
    d = 50
    k = d if isinstance(compression, DenseSpec) else 5
    for record, sent in zip(result.steps, payloads, strict=True):
        assert len(sent) == W
        assert record.bytes_per_worker == [p.nbytes for p in sent]
        assert record.bytes_sent == sum(p.nbytes for p in sent)
        assert all(len(encode(p)) == p.nbytes for p in sent)  # type: ignore[arg-type]
        assert record.bytes_per_worker == [per_worker_bytes] * W
        assert record.density == pytest.approx(k / d)
    assert result.bytes_sent == 6 * W * per_worker_bytes
    running = [(t + 1) * W * per_worker_bytes for t in range(6)]
    assert [record.bytes_total for record in result.steps] == running


def test_async_rounds_carry_the_running_byte_total() -> None:
    result = simulate_async(job(exchange=ExchangeSpec(mode="async", max_staleness=1), steps=6))
    totals = [record.bytes_total for record in result.steps]
    assert totals == list(itertools.accumulate(record.bytes_sent for record in result.steps))
    assert all(record.step_s is not None and record.step_s > 0 for record in result.steps)


def test_step_metrics_fields() -> None:
    spec = job(schedule=InverseTimeLR(gamma=1.0, a=10.0, lam=0.5), steps=5)
    result = simulate(spec)
    assert [record.step for record in result.steps] == list(range(5))
    assert [record.lr for record in result.steps] == pytest.approx(
        [1.0 / (0.5 * (t + 10.0)) for t in range(5)]
    )
    assert all(record.loss > 0 for record in result.steps)
    assert all(
        min(record.compute_s, record.compress_s, record.exchange_s) >= 0 for record in result.steps
    )
    for record in result.steps:  # the phases add up to the step's wall time
        assert record.step_s is not None and record.wait_s == 0.0  # no network in-process
        phases = record.compute_s + record.compress_s + record.exchange_s + record.other_s
        assert phases == pytest.approx(record.step_s, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("steps", "every", "expected"),
    [
        (25, 10, [0, 10, 20, 25]),
        (20, 10, [0, 10, 20]),
        (7, 0, [0, 7]),
        (3, 10, [0, 3]),
        (4, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_eval_schedule(steps: int, every: int, expected: list[int]) -> None:
    """Evaluations at step 0, every ``eval.every`` steps, and once at the end."""
    seen: list[EvalMetrics] = []
    result = simulate(job(steps=steps, eval=EvalSpec(every=every)), on_eval=seen.append)
    assert eval_steps(result.evals) == expected
    assert eval_steps(seen) == expected
    assert result.final.step == steps


def test_eval_has_test_metrics_only_with_a_test_split() -> None:
    with_test = simulate(job(steps=4))
    for record in with_test.evals:
        assert record.test_loss is not None and record.test_accuracy is not None
        assert 0.0 <= record.test_accuracy <= 1.0
        assert 0.0 <= record.train_accuracy <= 1.0
        assert record.avg_train_loss is None and record.avg_test_accuracy is None
    # Logistic regression starts at x = 0: the loss is log 2 before any step.
    assert with_test.evals[0].train_loss == pytest.approx(float(torch.log(torch.tensor(2.0))))

    without_test = simulate(job(steps=4, data=SyntheticSpec(n=600, d=50, test_fraction=0.0)))
    for record in without_test.evals:
        assert record.test_loss is None and record.test_accuracy is None


def test_eval_max_rows_limits_evaluation() -> None:
    full = simulate(job(steps=3))
    limited = simulate(job(steps=3, eval=EvalSpec(every=0, max_rows=10)))
    assert full.params is not None and limited.params is not None
    assert torch.equal(full.params, limited.params)
    assert full.final.train_loss != limited.final.train_loss
    assert (limited.final.train_accuracy * 10) == pytest.approx(
        round(limited.final.train_accuracy * 10)
    )


def test_averaging_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """The averaged model is Σ w_t x_t / Σ w_t over the iterates x_0 .. x_{T-1}."""
    iterates: list[torch.Tensor] = []
    original = MeanApplier.apply

    def spy(self: MeanApplier, flat: torch.Tensor, sent: Sequence[Payload]) -> None:
        iterates.append(flat.detach().clone())
        original(self, flat, sent)

    monkeypatch.setattr(MeanApplier, "apply", spy)
    shift = 4.0
    result = simulate(job(steps=12, averaging=AveragingSpec(shift=shift)))
    assert result.averaged is not None and len(iterates) == 12
    weights = [(t + shift) ** 2 for t in range(12)]
    expected = sum(w * x.double() for w, x in zip(weights, iterates, strict=True)) / sum(weights)
    torch.testing.assert_close(result.averaged.double(), expected, rtol=0, atol=1e-6)
    assert all(record.avg_train_loss is not None for record in result.evals)
    assert all(record.avg_test_accuracy is not None for record in result.evals)


# --- convergence -------------------------------------------------------------------------


def test_topk_with_memory_tracks_dense_and_beats_randk_without() -> None:
    """Top-k (5%) with error feedback nearly matches dense SGD; memory-less random-k at
    the same budget lags far behind."""

    def final_loss(compression: Any, memory: str) -> float:
        spec = JobSpec(
            model=LogisticRegressionSpec(),
            data=SyntheticSpec(n=2000, d=200, label_noise=0.0, test_fraction=0.0),
            schedule=ConstantLR(lr=8.0),
            compression=compression,
            memory=memory,
            workers=WorkersSpec(count=2),
            batch_size=32,
            steps=100,
            eval=EvalSpec(every=0),
            seed=0,
        )
        return simulate(spec).final.train_loss

    dense = final_loss(DenseSpec(), "none")
    topk = final_loss(TopKSpec(ratio=0.05), "error_feedback")
    randk = final_loss(RandKSpec(ratio=0.05, rescale=False), "none")
    start = float(torch.log(torch.tensor(2.0)))
    assert dense < 0.75 * start, "dense SGD must make real progress"
    assert topk <= 1.1 * dense
    assert randk > 1.25 * dense
    assert randk - dense > 3 * abs(topk - dense)


# --- epochs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "workers", "batch"), [(1.0, 2, 32), (1.0, 3, 20), (2.5, 2, 50), (0.01, 2, 32)]
)
def test_epochs_resolve_to_steps(epochs: float, workers: int, batch: int) -> None:
    spec = job(steps=None, epochs=epochs, workers=WorkersSpec(count=workers), batch_size=batch)
    n_train = build_dataset(spec.data, spec.seed).n_train
    assert n_train == 540
    expected = max(1, round(epochs * n_train / (workers * batch)))
    result = simulate(spec)
    assert len(result.steps) == expected
    assert result.final.step == expected
