"""W logical workers in one process, running exactly the Ray workers' step code.

Used for paper reproductions, for tests that compare the distributed runtime step for step,
and on a laptop without a cluster. The replicas share one parameter vector (they would hold
bit-identical copies anyway); each logical worker has its own shard, generator and memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression import build_compressor
from sparsetrain.workers.data import Dataset
from sparsetrain.workers.elastic import (
    Change,
    changes_at,
    flush_compressor,
    leaving_ranks,
    lr_scale,
)
from sparsetrain.workers.evaluate import evaluate_setup
from sparsetrain.workers.result import TrainResult
from sparsetrain.workers.schedules import WeightedAverage, averaging_shift
from sparsetrain.workers.setup import prepare
from sparsetrain.workers.step import (
    Ledger,
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
    changes: Sequence[Change] = (),
    ledgers: list[Ledger] | None = None,
) -> TrainResult:
    """Train ``spec`` with ``spec.workers.count`` logical workers in this process.

    ``changes`` replays a membership history (joins, graceful leaves, lost ranks; see
    ``sparsetrain.workers.elastic``) exactly as the Ray supervisor applies it. When
    ``ledgers`` is a list, every logical worker that ever trains gets a ``Ledger`` (in order
    of creation) and it is appended there.

    Deterministic: the same spec (and seed) gives the same trajectory. Raises
    ``TrainingError`` on a non-finite gradient, ``SpecError``/``DataError`` on bad input.
    """
    setup = prepare(spec, device=device, dataset=dataset)
    model = setup.model

    def new_worker(rank: int, world: int, epoch: int) -> WorkerState:
        # Each logical worker owns its compressor, as each Ray worker does (PowerSGD keeps
        # per-worker warm-start state in it).
        compressor = build_compressor(spec.compression, model.numel, spec.seed, model.shapes)
        worker = WorkerState(
            rank=rank,
            world=world,
            spec=spec,
            dataset=setup.dataset,
            numel=model.numel,
            device=model.device,
            epoch=epoch,
            compressor=compressor,
        )
        if ledgers is not None:
            worker.ledger = Ledger(model.numel, model.device)
            ledgers.append(worker.ledger)
        return worker

    world = setup.world
    workers = [new_worker(rank, world, 0) for rank in range(world)]
    flush = flush_compressor(model.numel)
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
    epoch, removed = 0, False
    for step in range(setup.total_steps):
        joins, leaves, lost = changes_at(changes, step)
        if joins or removed:
            epoch += 1
            size = len(workers) + joins
            workers += [new_worker(rank, size, epoch) for rank in range(len(workers), size)]
            for joiner in workers[len(workers) - joins :]:
                if joiner.velocity is not None and workers[0].velocity is not None:
                    joiner.velocity.copy_(workers[0].velocity)
            for rank, worker in enumerate(workers):
                worker.regroup(len(workers), rank, epoch)
        leaving = leaving_ranks(len(workers), leaves, lost)
        lr = setup.schedule(step) * lr_scale(spec, len(workers))
        if averager is not None:
            averager.update(model.flat, step)
        outputs = [
            (
                rank,
                compute_update(
                    model,
                    setup.objective,
                    worker,
                    setup.dataset,
                    flush if rank in leaving else worker.compressor or setup.compressor,
                    lr,
                    step,
                ),
            )
            for rank, worker in enumerate(workers)
            if rank not in lost
        ]
        started = time.perf_counter()
        applier.apply(model.flat, [out.payload for _, out in outputs])
        metrics = step_metrics(
            step,
            lr,
            [RankStats.of(rank, out) for rank, out in outputs],
            model.numel,
            exchange_s=time.perf_counter() - started,
        )
        result.steps.append(metrics)
        if on_step is not None:
            on_step(metrics)
        removed = bool(leaving or lost)
        workers = [w for rank, w in enumerate(workers) if rank not in leaving and rank not in lost]
        done = step + 1
        if (every and done % every == 0) or done == setup.total_steps:
            record_eval(done)
    result.params = model.flat.detach().cpu().clone()
    result.averaged = averager.value.detach().cpu().clone() if averager else None
    result.memories = [w.memory.residual() for w in workers]
    return result
