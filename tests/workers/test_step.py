"""Tests for ``sparsetrain.workers.training.step``, driven through the real step code.

Memory conservation, equivalence of dense W-worker SGD with large-batch SGD, and the
non-finite-gradient error.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from sparsetrain.errors import TrainingError
from sparsetrain.metrics import StepMetrics
from sparsetrain.spec import (
    ConstantLR,
    DenseSpec,
    LogisticRegressionSpec,
    StepLR,
    TopKSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import Compressor, DenseUpdate, SparseUpdate
from sparsetrain.workers.data.datasets import ShardSampler, build_dataset, shard_indices
from sparsetrain.workers.training.memory import ErrorFeedback
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.step import (
    WorkerState,
    all_finite,
    apply_update,
    compute_update,
    mean_update,
    worker_seed,
)
from tests.specs import SMALL_JOB, job_spec_model
from tests.workers.stepping import rank0_kwargs, step_once

job = partial(job_spec_model, SMALL_JOB)


def test_memory_accounts_for_every_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """x_0 - x_T == (1/W)·Σ_w (Σ_t lr_t·g_{w,t} - m_{w,T}) through ``simulate``.

    Every call of the real error-feedback memory is observed to sum lr_t·g_{w,t} per
    worker (in float64); nothing else is replaced.
    """
    spec = job(
        compression=TopKSpec(ratio=0.1),
        memory="error_feedback",
        schedule=StepLR(lr=2.0, factor=0.5, every=10),
        steps=50,
    )
    seen: list[tuple[ErrorFeedback, torch.Tensor]] = []
    lrs: list[float] = []
    original = ErrorFeedback.compress

    def spy(
        self: ErrorFeedback,
        grad: torch.Tensor,
        lr: float,
        compressor: Compressor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> DenseUpdate | SparseUpdate:
        mine = [total for memory, total in seen if memory is self]
        if mine:
            total = mine[0]
        else:
            total = torch.zeros(grad.numel(), dtype=torch.float64)
            seen.append((self, total))
        total.add_(grad.double(), alpha=lr)
        lrs.append(lr)
        return original(self, grad, lr, compressor, step=step, generator=generator)

    monkeypatch.setattr(ErrorFeedback, "compress", spy)
    x0 = prepare(spec).model.flat.clone()
    result = simulate(spec)

    W = spec.workers.count
    assert len(seen) == W
    assert len(lrs) == W * 50
    assert len(set(lrs)) > 1, "the schedule must vary"
    assert [record.lr for record in result.steps] == lrs[::W]
    assert result.params is not None
    residuals = result.memories
    assert len(residuals) == W
    explained = torch.zeros(x0.numel(), dtype=torch.float64)
    for (memory, total), residual in zip(seen, residuals, strict=True):
        assert residual is memory.buffer
        assert float(residual.abs().max()) > 0, "top-k must have left something in memory"
        explained += total - residual.double()
    explained /= W
    moved = (x0 - result.params).double()
    assert float(moved.abs().max()) > 0.1
    torch.testing.assert_close(moved, explained, rtol=0, atol=1e-5)


@pytest.mark.parametrize("memory", ["none", "error_feedback"])
def test_dense_workers_equal_large_batch_sgd(memory: str) -> None:
    """W=2 dense workers with batch B == one SGD step on the 2B rows of both shards."""
    W, B, lr, l2, steps, seed = 2, 16, 0.7, 0.01, 20, 5
    spec = job(
        model=LogisticRegressionSpec(l2=l2),
        compression=DenseSpec(),
        memory=memory,
        schedule=ConstantLR(lr=lr),
        workers=WorkersSpec(count=W),
        batch_size=B,
        steps=steps,
        seed=seed,
    )
    result = simulate(spec)

    data = build_dataset(spec.data, seed)
    samplers = [
        ShardSampler(shard_indices(data.n_train, W, rank, seed), B, seed, rank) for rank in range(W)
    ]
    x = torch.zeros(data.input_shape[0])
    for _ in range(steps):
        rows = torch.cat([sampler.next_batch() for sampler in samplers])
        w = x.clone().requires_grad_(True)
        logits = data.x_train[rows] @ w
        loss = F.binary_cross_entropy_with_logits(logits, data.y_train[rows].float())
        loss = loss + 0.5 * l2 * w.dot(w)
        (grad,) = torch.autograd.grad(loss, w)
        x = x - lr * grad
    assert result.params is not None
    assert float(x.abs().max()) > 0.05
    torch.testing.assert_close(result.params, x, rtol=0, atol=1e-5)
    if memory == "error_feedback":
        assert all(float(m.abs().max()) == 0.0 for m in result.memories if m is not None)


def test_nan_row_stops_training_at_the_step_it_is_first_sampled() -> None:
    spec = job(steps=60, batch_size=8, compression=TopKSpec(ratio=0.2))
    clean = build_dataset(spec.data, spec.seed)
    row = 123
    x_train = clean.x_train.clone()
    x_train[row, 7] = float("nan")
    poisoned = dataclasses.replace(clean, x_train=x_train)

    W = spec.workers.count
    (owner,) = [
        rank
        for rank in range(W)
        if row in shard_indices(clean.n_train, W, rank, spec.seed).tolist()
    ]
    sampler = ShardSampler(
        shard_indices(clean.n_train, W, owner, spec.seed), spec.batch_size, spec.seed, owner
    )
    expected = next(t for t in range(spec.steps) if row in sampler.next_batch().tolist())
    assert 0 < expected < spec.steps - 1, "pick a row sampled mid-run"

    recorded: list[StepMetrics] = []
    with pytest.raises(TrainingError) as info:
        simulate(spec, dataset=poisoned, on_step=recorded.append)
    assert info.value.step == expected
    assert info.value.rank == owner
    assert "step" in str(info.value)
    assert f"step {expected}" in str(info.value)
    assert [record.step for record in recorded] == list(range(expected))
    assert all(torch.isfinite(torch.tensor(record.loss)) for record in recorded)


def test_compute_update_leaves_parameters_and_advances_state() -> None:
    """``compute_update`` reads the parameters, mutates only the worker state."""
    spec = job(compression=TopKSpec(k=5))
    setup = prepare(spec)
    state = WorkerState(rank=1, world=2, spec=spec, dataset=setup.dataset, numel=setup.model.numel)
    with torch.no_grad():
        setup.model.flat.copy_(torch.linspace(-1, 1, setup.model.numel))
    before = setup.model.flat.clone()
    out = compute_update(
        setup.model, setup.objective, state, setup.dataset, setup.compressor, lr=0.5, step=0
    )
    assert torch.equal(setup.model.flat, before)
    assert out.payload.nnz == 5
    assert out.loss > 0 and out.compute_s >= 0 and out.compress_s >= 0
    assert state.sampler.state_dict() == {"epoch": 0, "position": spec.batch_size}
    rows = ShardSampler(
        shard_indices(setup.dataset.n_train, 2, 1, spec.seed), spec.batch_size, spec.seed, 1
    ).next_batch()
    _, grad = setup.model.loss_and_grad(
        setup.dataset.x_train[rows], setup.dataset.y_train[rows], setup.objective.data_loss
    )
    grad += setup.objective.l2 * before
    residual = state.memory.residual()
    assert residual is not None
    torch.testing.assert_close(residual + out.payload.to_dense(), 0.5 * grad, rtol=0, atol=1e-7)


def test_worker_state_round_trip() -> None:
    """A restored WorkerState continues exactly as the original would."""
    spec = job(compression=TopKSpec(k=5))
    setup = prepare(spec)
    first = WorkerState(**rank0_kwargs(setup))
    for step in range(3):
        step_once(setup, first, step)
    second = WorkerState(**rank0_kwargs(setup))
    second.load_state_dict(first.state_dict())
    a, b = step_once(setup, first, 3), step_once(setup, second, 3)
    assert torch.equal(a.payload.to_dense(), b.payload.to_dense())
    assert a.loss == b.loss


def test_mean_and_apply_update() -> None:
    numel = 6
    payloads = [
        DenseUpdate(torch.arange(6, dtype=torch.float32)),
        SparseUpdate(torch.tensor([0, 5], dtype=torch.int32), torch.tensor([2.0, -4.0]), numel),
    ]
    update = mean_update(payloads, numel, torch.device("cpu"))
    assert torch.equal(update, torch.tensor([1.0, 0.5, 1.0, 1.5, 2.0, 0.5]))
    flat = torch.ones(numel)
    apply_update(flat, update)
    assert torch.equal(flat, 1 - update)


def test_worker_seed_is_pure_and_distinct() -> None:
    assert worker_seed(3, 1) == worker_seed(3, 1)
    seeds = {worker_seed(seed, rank) for seed in range(4) for rank in range(8)}
    assert len(seeds) == 32
    assert all(0 <= s < 2**63 for s in seeds)
    assert 0 <= worker_seed(2**63 - 1, 1023) < 2**63


def test_the_finite_check_is_exact_when_the_sum_overflows() -> None:
    big = torch.full((4,), 3e38)  # every entry finite; their sum is not
    assert all_finite(big)
    for bad in (float("inf"), float("-inf"), float("nan")):
        x = torch.randn(100_000)
        x[77] = bad
        assert not all_finite(x)
    assert all_finite(torch.randn(100_000))
