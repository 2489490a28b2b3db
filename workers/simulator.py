"""W logical workers in one process, running exactly the Ray workers' step code.

Used for paper reproductions, for tests that compare the distributed runtime step for step,
and on a laptop without a cluster. The replicas share one parameter vector (they would hold
bit-identical copies anyway); each logical worker has its own shard, generator and memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.data import Dataset
from sparsetrain.workers.evaluate import evaluate
from sparsetrain.workers.schedules import WeightedAverage, averaging_shift
from sparsetrain.workers.setup import JobSetup, prepare
from sparsetrain.workers.step import WorkerState, apply_update, compute_update, mean_update


@dataclass
class SimulationResult:
    """Every step's metrics, every evaluation, and the final parameters."""

    steps: list[StepMetrics] = field(default_factory=list)
    evals: list[EvalMetrics] = field(default_factory=list)
    params: torch.Tensor | None = None
    averaged: torch.Tensor | None = None
    memories: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return sum(record.bytes_sent for record in self.steps)

    @property
    def final(self) -> EvalMetrics:
        return self.evals[-1]


def evaluate_setup(setup: JobSetup, step: int, averaged: torch.Tensor | None = None) -> EvalMetrics:
    """Evaluate the current parameters (and ``averaged``, if given) on train and test."""
    data, limit = setup.dataset, setup.spec.eval.max_rows
    x_train, y_train = data.x_train[:limit], data.y_train[:limit]
    x_test, y_test = data.x_test[:limit], data.y_test[:limit]
    train_loss, train_acc = evaluate(setup.model, setup.objective, x_train, y_train)
    record = EvalMetrics(step=step, train_loss=train_loss, train_accuracy=train_acc)
    if data.n_test:
        record.test_loss, record.test_accuracy = evaluate(
            setup.model, setup.objective, x_test, y_test, regularize=False
        )
    if averaged is not None:
        record.avg_train_loss, _ = evaluate(
            setup.model, setup.objective, x_train, y_train, averaged
        )
        if data.n_test:
            _, record.avg_test_accuracy = evaluate(
                setup.model, setup.objective, x_test, y_test, averaged, regularize=False
            )
    return record


def simulate(
    spec: JobSpec,
    *,
    device: torch.device | str = "cpu",
    dataset: Dataset | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
    on_eval: Callable[[EvalMetrics], None] | None = None,
) -> SimulationResult:
    """Train ``spec`` with ``spec.workers.count`` logical workers in this process.

    Deterministic: the same spec (and seed) gives the same trajectory. Raises
    ``TrainingError`` on a non-finite gradient, ``SpecError``/``DataError`` on bad input.
    """
    setup = prepare(spec, device=device, dataset=dataset)
    model, world = setup.model, setup.world
    workers = [
        WorkerState(
            rank=rank,
            world=world,
            spec=spec,
            dataset=setup.dataset,
            numel=model.numel,
            device=model.device,
        )
        for rank in range(world)
    ]
    averager = None
    if spec.averaging is not None:
        averager = WeightedAverage(model.flat, averaging_shift(spec.averaging, spec.schedule))
    result = SimulationResult()

    def record_eval(step: int) -> None:
        metrics = evaluate_setup(setup, step, averager.value if averager else None)
        result.evals.append(metrics)
        if on_eval is not None:
            on_eval(metrics)

    record_eval(0)
    every = spec.eval.every
    for step in range(setup.total_steps):
        lr = setup.schedule(step)
        if averager is not None:
            averager.update(model.flat, step)
        outputs = [
            compute_update(model, setup.objective, w, setup.dataset, setup.compressor, lr, step)
            for w in workers
        ]
        started = time.perf_counter()
        update = mean_update([out.payload for out in outputs], model.numel, model.device)
        apply_update(model.flat, update)
        sizes = [out.payload.nbytes for out in outputs]
        metrics = StepMetrics(
            step=step,
            loss=sum(out.loss for out in outputs) / world,
            lr=lr,
            bytes_sent=sum(sizes),
            bytes_per_worker=sizes,
            density=sum(out.payload.nnz for out in outputs) / (world * model.numel),
            compute_s=max(out.compute_s for out in outputs),
            compress_s=max(out.compress_s for out in outputs),
            exchange_s=time.perf_counter() - started,
        )
        result.steps.append(metrics)
        if on_step is not None:
            on_step(metrics)
        done = step + 1
        if (every and done % every == 0) or done == setup.total_steps:
            record_eval(done)
    result.params = model.flat.detach().cpu().clone()
    result.averaged = averager.value.detach().cpu().clone() if averager else None
    result.memories = [w.memory.residual() for w in workers]
    return result
