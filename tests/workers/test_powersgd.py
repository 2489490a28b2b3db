"""PowerSGD: low-rank reconstruction, warm start, error feedback, checkpointed state."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import torch

from sparsetrain.spec import (
    ConstantLR,
    EvalSpec,
    MLPSpec,
    PowerSGDSpec,
    SyntheticSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import (
    LowRankUpdate,
    StatefulCompressor,
    build_compressor,
    decode,
    encode,
)
from sparsetrain.workers.compression.powersgd import PowerSGD
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.step import WorkerState
from tests.specs import job_spec_model
from tests.workers.feedback import run_error_feedback
from tests.workers.stepping import rank0_kwargs, step_once

# A convolution kernel, its bias, a dense weight matrix and its bias: 1000 parameters.
SHAPES: list[tuple[int, ...]] = [(4, 3, 5, 5), (4,), (24, 28), (24,)]
D = 1000


def _powersgd(shapes: list[tuple[int, ...]] = SHAPES, seed: int = 0, **fields: Any) -> PowerSGD:
    numel = sum(math.prod(s) for s in shapes)
    compressor = build_compressor(PowerSGDSpec(**fields), numel, seed, shapes=shapes)
    assert isinstance(compressor, PowerSGD)
    return compressor


def _matrix(rows: int, cols: int, spectrum: list[float], seed: int) -> torch.Tensor:
    """rows-by-cols with the given leading singular values (random singular vectors)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, len(spectrum), generator=generator)).Q
    v = torch.linalg.qr(torch.randn(cols, len(spectrum), generator=generator)).Q
    return (u * torch.tensor(spectrum)) @ v.T


def _relative_error(payload: LowRankUpdate, x: torch.Tensor) -> float:
    return float((payload.to_dense() - x).norm() / x.norm())


@pytest.mark.parametrize("warm_start", [True, False])
def test_rank_r_matrix_is_reconstructed_exactly(warm_start: bool) -> None:
    x = _matrix(24, 28, [5.0, 2.0], seed=0).reshape(-1)
    compressor = _powersgd([(24, 28)], rank=2, warm_start=warm_start)
    for step in range(5):
        payload = compressor.compress(x, step=step)
        assert _relative_error(payload, x) < 1e-5


def test_warm_start_converges_to_the_best_rank_r_approximation() -> None:
    """Repeated on one matrix, warm-started steps are subspace iteration: the error reaches
    Eckart-Young's ‖M - M_r‖; cold starts stay further away."""
    spectrum = [10.0, 9.0, 6.0, 5.5, 5.0, 4.0, 3.0, 2.0]
    x = _matrix(24, 28, spectrum, seed=1).reshape(-1)
    best = math.sqrt(sum(s * s for s in spectrum[2:])) / math.sqrt(sum(s * s for s in spectrum))
    warm = _powersgd([(24, 28)], rank=2)
    cold = _powersgd([(24, 28)], rank=2, warm_start=False)
    warm_errors = [_relative_error(warm.compress(x, step=t), x) for t in range(60)]
    cold_errors = [_relative_error(cold.compress(x, step=t), x) for t in range(60)]
    assert warm_errors[-1] == pytest.approx(best, rel=1e-3)
    assert warm_errors[0] == pytest.approx(cold_errors[0])  # the same first Q
    assert min(cold_errors) > best * 1.02
    assert sum(warm_errors[-10:]) < sum(cold_errors[-10:])


def test_payload_factors_dense_parts_and_bytes() -> None:
    payload = _powersgd(rank=2).compress(torch.randn(D), step=0)
    assert [(f.offset, f.rows, f.cols, f.rank) for f in payload.factors] == [
        (0, 4, 75, 2),
        (304, 24, 28, 2),
    ]
    assert payload.segments == ((300, 4), (976, 24))
    assert payload.nnz == 2 * 79 + 2 * 52 + 28
    assert payload.nbytes == 24 + 16 + 2 * 20 + 2 * 16 + 4 * payload.nnz
    assert payload.nbytes == len(encode(payload))
    decoded = decode(encode(payload))
    assert torch.equal(decoded.to_dense(), payload.to_dense())


def test_one_dimensional_and_small_tensors_are_sent_dense() -> None:
    """Factors of a 3x2 matrix at rank 2 (10 values) would not be smaller than it (6)."""
    shapes: list[tuple[int, ...]] = [(3, 2), (5,), (2, 1, 1, 1)]
    x = torch.randn(13, generator=torch.Generator().manual_seed(0))
    compressor = _powersgd(shapes, rank=2)
    payload = compressor.compress(x, step=0)
    assert payload.factors == ()
    assert payload.segments == ((0, 13),)
    assert torch.equal(payload.to_dense(), x)
    assert compressor.state_dict() == {}


def test_first_q_is_shared_by_workers_of_a_job_and_differs_across_seeds() -> None:
    x = torch.randn(D, generator=torch.Generator().manual_seed(3))
    a = _powersgd(seed=11).compress(x, step=0, generator=torch.Generator().manual_seed(1))
    b = _powersgd(seed=11).compress(x, step=0, generator=torch.Generator().manual_seed(2))
    c = _powersgd(seed=12).compress(x, step=0)
    assert torch.equal(a.values, b.values)
    assert not torch.equal(a.values, c.values)


def test_error_feedback_conserves_everything() -> None:
    """Σ sent + memory == Σ lr·g over many steps, and the memory stays bounded."""
    sent, target, memory = run_error_feedback(_powersgd(rank=1), D, [0.1] * 60, seed=4)
    torch.testing.assert_close(sent + memory, target, atol=1e-5, rtol=1e-5)
    assert float(memory.norm()) < float(target.norm())


def test_state_round_trip_and_validation() -> None:
    x = torch.randn(D, generator=torch.Generator().manual_seed(5))
    first = _powersgd()
    for step in range(3):
        first.compress(x + step, step=step)
    second = _powersgd()
    assert isinstance(second, StatefulCompressor)
    second.load_state_dict(first.state_dict())
    assert torch.equal(first.compress(x, step=3).values, second.compress(x, step=3).values)
    with pytest.raises(ValueError, match="Q matrices"):
        second.load_state_dict({"q.0": torch.zeros(75, 2)})
    with pytest.raises(ValueError, match="Q matrices"):
        second.load_state_dict({"q.0": torch.zeros(75, 3), "q.1": torch.zeros(28, 2)})
    assert _powersgd(warm_start=False).state_dict() == {}


POWERSGD_JOB: dict[str, Any] = {
    "model": MLPSpec(hidden=[16]),
    "data": SyntheticSpec(n=800, d=20, test_fraction=0.2),
    "schedule": ConstantLR(lr=0.2),
    "compression": PowerSGDSpec(rank=1),
    "memory": "error_feedback",
    "workers": WorkersSpec(count=2),
    "batch_size": 32,
    "steps": 150,
    "eval": EvalSpec(every=0),
    "seed": 5,
}
_job = partial(job_spec_model, POWERSGD_JOB)


def test_warm_start_state_round_trips_through_worker_state() -> None:
    """A rank restored from ``WorkerState.state_dict`` continues exactly, Q included; without
    the Q it would not."""
    spec = _job(model=MLPSpec(hidden=[16, 8]))
    setup = prepare(spec)
    kwargs = rank0_kwargs(setup)
    first = WorkerState(compressor=setup.compressor, **kwargs)
    for step in range(3):
        step_once(setup, first, step)
    state = first.state_dict()
    assert set(state["compressor"]) == {"q.0", "q.1"}

    restored_setup, fresh_setup = prepare(spec), prepare(spec)
    restored = WorkerState(compressor=restored_setup.compressor, **kwargs)
    restored.load_state_dict(state)
    without_q = WorkerState(compressor=fresh_setup.compressor, **kwargs)
    without_q.load_state_dict({k: v for k, v in state.items() if k != "compressor"})

    def next_update(worker: WorkerState, compressor: Any) -> torch.Tensor:
        return step_once(setup, worker, 3, compressor).payload.to_dense()

    expected = next_update(first, setup.compressor)
    assert torch.equal(next_update(restored, restored_setup.compressor), expected)
    assert not torch.equal(next_update(without_q, fresh_setup.compressor), expected)

    stateless = WorkerState(**kwargs)
    assert "compressor" not in stateless.state_dict()
    with pytest.raises(ValueError, match="compressor"):
        stateless.load_state_dict(state)


def test_simulated_mlp_job_learns() -> None:
    result = simulate(_job())
    first, last = result.evals[0], result.evals[-1]
    assert last.train_loss < 0.8 * first.train_loss
    assert last.train_accuracy > first.train_accuracy
    # Layout (16, 20), (16,), (1, 16), (1,): only the first matrix gains from factoring;
    # the rest is one dense run of 16 + 16 + 1 values.
    nnz = (16 + 20) + 33
    expected_bytes = 24 + 16 + 20 + 16 + 4 * nnz
    assert {size for record in result.steps for size in record.bytes_per_worker} == {expected_bytes}
    assert result.steps[0].density == pytest.approx(nnz / 353)
