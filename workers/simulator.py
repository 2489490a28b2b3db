"""W logical workers in one process, running exactly the Ray workers' step code.

Used for paper reproductions, for tests that compare the distributed runtime step for step,
and on a laptop without a cluster. The replicas share one parameter vector (they would hold
bit-identical copies anyway); each logical worker has its own shard, generator and memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.data import Dataset
from sparsetrain.workers.evaluate import evaluate_setup
from sparsetrain.workers.result import TrainResult
from sparsetrain.workers.schedules import WeightedAverage, averaging_shift
from sparsetrain.workers.setup import prepare
from sparsetrain.workers.step import (
    MeanApplier,
    RankStats,
    WorkerState,
    compute_update,
    step_metrics,
)


def simulate(
    spec: JobSpec,
    *,
    device: torch.device | str = "cpu",
    dataset: Dataset | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
    on_eval: Callable[[EvalMetrics], None] | None = None,
) -> TrainResult:
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
    applier = MeanApplier(model.numel, model.device)
    result = TrainResult()

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
        applier.apply(model.flat, [out.payload for out in outputs])
        metrics = step_metrics(
            step,
            lr,
            [RankStats.of(rank, out) for rank, out in enumerate(outputs)],
            model.numel,
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
