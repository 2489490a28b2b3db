"""W logical workers in one process, running exactly the Ray workers' step code.

Used for paper reproductions, for tests that compare the distributed runtime step for step,
and on a laptop without a cluster. The replicas share one parameter vector (they would hold
bit-identical copies anyway); each logical worker has its own shard, generator and memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression import build_compressor
from sparsetrain.workers.data.datasets import Dataset
from sparsetrain.workers.models.buffers import RankBuffers, refuse_async_buffers
from sparsetrain.workers.training.aggregation import Aggregator
from sparsetrain.workers.training.apply import ReplicaUpdate
from sparsetrain.workers.training.elastic import (
    Change,
    changes_at,
    flush_compressor,
    leaving_ranks,
    lr_scale,
)
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.overlap import (
    Lookahead,
    change_drains,
    lookahead_factor,
    path_overlaps,
    spec_drains,
    window,
)
from sparsetrain.workers.training.prepare import JobSetup, prepare
from sparsetrain.workers.training.result import TrainResult
from sparsetrain.workers.training.samplers import Chain, build_chain
from sparsetrain.workers.training.schedules import build_averager
from sparsetrain.workers.training.step import (
    Ledger,
    RankStats,
    StepOutput,
    WorkerState,
    compute_update,
    round_metrics,
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
    ``sparsetrain.workers.training.elastic``) exactly as the Ray supervisor applies it. When
    ``ledgers`` is a list, every logical worker that ever trains gets a ``Ledger`` (in order
    of creation) and it is appended there.

    A sampling job (``objective: sample``) adds the step's Langevin noise after each mean,
    once, as every Ray replica does, and returns its samples in ``TrainResult.samples``.

    With ``exchange.overlap`` a step's aggregate is applied after the next step's gradient
    (taken at the lookahead point), except at the drained steps
    ``sparsetrain.workers.training.overlap`` defines, as the Ray workers' overlapped
    collective steps do; a step is recorded once its aggregate is applied.

    Each logical worker trains on its own buffers (batch-norm statistics), as each Ray
    replica does; they are replaced by their mean over the workers where the Ray run does
    it (``buffer_sync_due``): before an evaluation, a checkpoint, a join and the end.

    Deterministic: the same spec (and seed) gives the same trajectory at the same number of
    torch threads (a Ray worker runs with one per CPU it holds; CPU matrix products may sum
    in another order with more). Raises ``TrainingError`` on a non-finite gradient,
    ``SpecError``/``DataError`` on bad input.
    """
    setup = prepare(spec, device=device, dataset=dataset)
    model = setup.model
    chain = build_chain(spec, model, setup.objective, setup.dataset)

    def new_worker(rank: int, world: int, epoch: int) -> WorkerState:
        worker = _logical_worker(setup, rank, world, epoch, chain)
        if ledgers is not None:
            worker.ledger = Ledger(model.numel, model.device)
            ledgers.append(worker.ledger)
        return worker

    world = setup.world
    workers = [new_worker(rank, world, 0) for rank in range(world)]
    buffers = RankBuffers(model, world)
    flush = flush_compressor(model.numel)
    averager = build_averager(setup.spec, setup.model.flat)
    update = ReplicaUpdate(spec, model.numel, model.device)
    aggregator = Aggregator(spec, update, setup.compressor)
    result = TrainResult()
    lookahead = Lookahead(lookahead_factor(spec) if window(spec) else 0.0, model.device)
    update_mode = update.optimizer is None

    def record_eval(step: int) -> None:
        final = chain is not None and step == setup.total_steps
        samples = chain.sample_tensor() if final and chain is not None else None
        metrics = evaluate_setup(setup, step, averager.value if averager else None, samples)
        result.evals.append(metrics)
        if on_eval is not None:
            on_eval(metrics)

    def close(computed: _Computed, sent: int, step_started: float | None = None) -> int:
        """Apply ``computed``'s aggregate along the step's aggregation path and record the
        step; returns ``sent`` (bytes so far) plus its bytes."""
        step, lr, ranks = computed.step, computed.lr, computed.ranks
        started = time.perf_counter()
        with lookahead.applying(model.flat, [out.payload for _, _, out in ranks], update_mode):
            applied = aggregator.apply(model.flat, [(w, out) for _, w, out in ranks], lr, step)
        for _, worker, _ in ranks:
            worker.settle(applied.skipped)
        if chain is not None:
            chain.after_apply(step, lr)
        finished = time.perf_counter()
        metrics = step_metrics(
            step,
            lr,
            [
                replace(RankStats.of(rank, out, exchange_s=finished - started), nbytes=nbytes)
                for (rank, _, out), nbytes in zip(ranks, applied.sent, strict=True)
            ],
            model.numel,
            step_s=finished - (started if step_started is None else step_started),
        )
        metrics.bytes_total = sent + metrics.bytes_sent
        result.steps.append(metrics)
        if on_step is not None:
            on_step(metrics)
        return metrics.bytes_total

    record_eval(0)
    every = spec.eval.every
    epoch, removed = 0, False
    sent = 0  # bytes sent so far
    late: _Computed | None = None  # an overlapped step whose aggregate is not applied yet
    for step in range(setup.total_steps):
        joins, leaves, lost = changes_at(changes, step)
        if joins:  # joiners copy the replica's buffers, averaged first
            buffers.sync()
            buffers.join(joins)
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
        step_started = time.perf_counter()
        scheduled = setup.schedule(step)
        lr = (chain.lr(step, scheduled) if chain else scheduled) * lr_scale(spec, len(workers))
        if averager is not None:
            averager.update(model.flat, step)
        outputs = []
        with lookahead.shifted(model.flat) if late is not None else nullcontext():
            for rank, worker in enumerate(workers):
                if rank in lost:
                    continue
                with buffers.computing(rank):
                    output = compute_update(
                        model,
                        setup.objective,
                        worker,
                        setup.dataset,
                        flush if rank in leaving else worker.compressor or setup.compressor,
                        lr,
                        step,
                        loss_scale=update.loss_scale,
                    )
                outputs.append((rank, output))
        computed = _Computed(step, lr, [(rank, workers[rank], out) for rank, out in outputs])
        # An overlapped job applies a step's aggregate after the next step's gradient, except
        # at drained steps (``overlap``), as the Ray workers do.
        if late is not None:
            sent = close(late, sent)
        drained = (
            spec_drains(spec, step, setup.total_steps)
            or change_drains(changes, step)
            or not path_overlaps(aggregator.path(len(outputs)), aggregator.powersgd is not None)
        )
        late = None if drained else computed
        if drained:
            sent = close(computed, sent, step_started)
        removed = bool(leaving or lost)
        staying = [rank for rank in range(len(workers)) if rank not in leaving and rank not in lost]
        workers = [workers[rank] for rank in staying]
        buffers.keep(staying)
        done = step + 1
        if buffer_sync_due(spec, done, setup.total_steps):
            buffers.sync()
        if (every and done % every == 0) or done == setup.total_steps:
            record_eval(done)
    result.params = model.flat.detach().cpu().clone()
    result.buffers = model.buffer_state()
    result.averaged = averager.value.detach().cpu().clone() if averager else None
    result.memories = [w.memory.residual() for w in workers]
    result.samples = chain.sample_tensor() if chain is not None else None
    return result


@dataclass(frozen=True)
class _Computed:
    """One step's payloads, before its aggregate is applied: (rank, its state, its output)
    per computing rank, in rank order."""

    step: int
    lr: float
    ranks: list[tuple[int, WorkerState, StepOutput]]


def buffer_sync_due(spec: JobSpec, done: int, total: int) -> bool:
    """Whether a synchronous run averages its replicas' buffers after ``done`` of ``total``
    steps: before an evaluation (``eval.every``, the end) or a checkpoint
    (``checkpoint.every``). A join averages them too (before its joiners copy them)."""
    every, checkpoint_every = spec.eval.every, spec.checkpoint.every
    evaluates = bool(every and done % every == 0) or done == total
    return evaluates or bool(checkpoint_every and done % checkpoint_every == 0)


def simulate_async(
    spec: JobSpec,
    *,
    device: torch.device | str = "cpu",
    dataset: Dataset | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> TrainResult:
    """Train ``spec`` as the Ray async mode does, with W logical workers in this process.

    Follows ``AsyncLoop``'s schedule exactly: at most min(W, max_staleness + 1) updates
    are in flight, each computed on the parameters current when it was launched (at the
    learning rate of that version's round), and they are applied in launch order with
    weight 1/W, so from the (max_staleness + 1)-th update on every update is exactly
    min(max_staleness, W - 1) versions stale. Idle ranks are relaunched first in, first
    out. A sampling job adds one noise draw per applied update and keeps samples at round
    boundaries. Records one ``StepMetrics`` per round of W updates, and evaluations at 0,
    every ``eval.every`` rounds and the end. Deterministic given the spec. Raises
    ``SpecError`` for a model with buffers (batch norm), which async training refuses.
    """
    setup = prepare(spec, device=device, dataset=dataset)
    model = setup.model
    refuse_async_buffers(model.buffer_layout)
    world, tau = spec.workers.count, spec.exchange.max_staleness
    chain = build_chain(spec, model, setup.objective, setup.dataset)
    workers = [_logical_worker(setup, rank, world, 0, chain) for rank in range(world)]
    averager = build_averager(setup.spec, setup.model.flat)
    if averager is not None:
        averager.update(model.flat, 0)
    result = TrainResult()
    total_updates = setup.total_steps * world
    version = 0
    local_steps = [0] * world
    in_flight: list[tuple[int, int, float, Any]] = []  # (rank, read version, lr, output)

    def record_eval(step: int) -> None:
        final = chain is not None and step == setup.total_steps
        samples = chain.sample_tensor() if final and chain is not None else None
        averaged = averager.value if averager else None
        result.evals.append(evaluate_setup(setup, step, averaged, samples))

    def launch(rank: int) -> None:
        worker = workers[rank]
        lr = setup.schedule(version // world)
        compressor = worker.compressor or setup.compressor
        output = compute_update(
            model, setup.objective, worker, setup.dataset, compressor, lr, local_steps[rank]
        )
        in_flight.append((rank, version, lr, output))
        local_steps[rank] += 1

    launched = min(world, tau + 1, total_updates)
    for rank in range(launched):
        launch(rank)
    idle = [rank for rank in range(world) if rank > tau]
    applied: list[tuple[RankStats, int]] = []
    last_lr = 0.0
    every = spec.eval.every
    record_eval(0)
    sent, round_started = 0, time.perf_counter()
    while version < total_updates:
        rank, read, last_lr, output = in_flight.pop(0)
        applied.append((RankStats.of(rank, output), version - read))
        output.payload.add_to(model.flat, alpha=-1.0 / world)
        if chain is not None:
            chain.after_async_update(version, last_lr, world)
        version += 1
        if version % world == 0:
            round_index = version // world - 1
            if averager is not None:
                averager.update(model.flat, round_index + 1)
            now = time.perf_counter()
            metrics = round_metrics(
                round_index, last_lr, applied, world, model.numel, step_s=now - round_started
            )
            round_started = now
            sent += metrics.bytes_sent
            metrics.bytes_total = sent
            result.steps.append(metrics)
            if on_step is not None:
                on_step(metrics)
            applied = []
            if every and (round_index + 1) % every == 0 and version < total_updates:
                record_eval(round_index + 1)
        idle.append(rank)
        while idle and launched < total_updates and len(in_flight) < tau + 1:
            launch(idle.pop(0))
            launched += 1
    record_eval(setup.total_steps)
    result.params = model.flat.detach().cpu().clone()
    result.averaged = averager.value.detach().cpu().clone() if averager else None
    result.memories = [w.memory.residual() for w in workers]
    result.samples = chain.sample_tensor() if chain is not None else None
    return result


def _logical_worker(
    setup: JobSetup, rank: int, world: int, epoch: int, chain: Chain | None
) -> WorkerState:
    """A fresh rank with its own compressor, as each Ray worker has (PowerSGD keeps
    per-worker warm-start state in it)."""
    spec, model = setup.spec, setup.model
    return WorkerState(
        rank=rank,
        world=world,
        spec=spec,
        dataset=setup.dataset,
        numel=model.numel,
        device=model.device,
        epoch=epoch,
        compressor=build_compressor(spec.compression, model.numel, spec.seed, model.shapes),
        chain=chain,
    )
