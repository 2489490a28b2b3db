"""Asynchronous training with bounded staleness: a parameter server and its driver loop.

The parameter server (a plain class, made an actor by the supervisor) holds the parameters
and applies one worker's update at a time, scaled by 1/W as in the synchronous mean. The
driver keeps at most ``max_staleness + 1`` workers computing at once, each on the newest
parameters when it starts, and applies updates in the order their parameters were read.
An update therefore waits behind at most the ``max_staleness`` others that were in flight
when it read the parameters: none is applied more than ``max_staleness`` versions stale
(Chen et al., "Stochastic Gradient MCMC with Stale Gradients").

A worker that dies is replaced in place: its update in flight and its memory are lost, a
fresh worker (zero memory, its shard from the start) takes its bundle and rank and computes
on the newest parameters, which the server holds; the job still applies ``steps * W``
updates. The job fails (an async job has no checkpoint to restart from) when the
replacement is not built within ``workers.wait_s`` or dies before it delivers an update.

``AsyncLoop`` runs one round (W applied updates) per call and returns what happened; the
supervisor records it and decides whether to go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from sparsetrain.errors import TrainingError
from sparsetrain.metrics import EvalMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.supervision import SupervisorEventKind
from sparsetrain.workers.compression import decode_view
from sparsetrain.workers.data.datasets import Dataset
from sparsetrain.workers.runtime.gather import WorkerDiedError, gather
from sparsetrain.workers.runtime.group import WorkerGroup, wait_until
from sparsetrain.workers.runtime.names import NAMESPACE, server_name
from sparsetrain.workers.runtime.outcomes import (
    Evaluated,
    Happening,
    Note,
    RoundOutcome,
    Steering,
    StepDone,
)
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.samplers import build_chain
from sparsetrain.workers.training.schedules import build_averager
from sparsetrain.workers.training.step import round_metrics

REPLACE_POLL_S = 0.05
INLINE_BYTES = 100 * 1024  # Ray passes smaller objects inside the call itself


class ParameterServer:
    """Holds the parameters; ``apply`` mutates them, one update at a time. For a sampling
    job it also holds the chain: one Langevin noise draw per applied update, the samples."""

    def __init__(self, spec_json: str, initial: np.ndarray, dataset: Dataset | None = None) -> None:
        """Start from the parameters ``initial``; ``dataset`` is the job's loaded dataset
        (None: load it from the spec)."""
        spec = JobSpec.model_validate_json(spec_json)
        self.setup = prepare(spec, dataset=dataset)
        self.world = spec.workers.count
        self.version = 0
        self.setup.model.flat.copy_(torch.from_numpy(np.array(initial, dtype=np.float32)))
        self.averager = build_averager(spec, self.setup.model.flat)
        if self.averager is not None:
            self.averager.update(self.setup.model.flat, 0)
        setup = self.setup
        self.chain = build_chain(spec, setup.model, setup.objective, setup.dataset)

    def apply(self, update: np.ndarray, lr: float = 0.0) -> int:
        """x <- x - update / W (a sampling job then adds the noise of a step ``lr`` update);
        returns the new version (the number of updates applied)."""
        decode_view(update).add_to(self.setup.model.flat, alpha=-1.0 / self.world)
        if self.chain is not None:
            self.chain.after_async_update(self.version, lr, self.world)
        self.version += 1
        if self.averager is not None and self.version % self.world == 0:
            self.averager.update(self.setup.model.flat, self.version // self.world)
        return self.version

    def params(self) -> np.ndarray:
        return self.setup.model.flat.numpy()

    def samples(self) -> np.ndarray | None:
        """A sampling job's kept samples, (count, d); None for other jobs."""
        return None if self.chain is None else self.chain.sample_tensor().numpy()

    def evaluate(self, step: int) -> dict[str, Any]:
        """Evaluate the parameters; at the last round, a sampling job's samples too."""
        averaged = self.averager.value if self.averager is not None else None
        final = self.chain is not None and step == self.setup.total_steps
        samples = self.chain.sample_tensor() if final and self.chain is not None else None
        return evaluate_setup(self.setup, step, averaged, samples).model_dump()


def start_parameter_server(job_id: str, spec: JobSpec, initial: Any, dataset: Any = None) -> Any:
    """Create the job's ``ParameterServer`` actor from the parameters ``initial`` and the
    loaded ``dataset`` (references; None: it loads the dataset itself); the caller owns it
    and kills it at the end."""
    return (
        ray.remote(ParameterServer)
        .options(name=server_name(job_id), namespace=NAMESPACE, num_cpus=0)
        .remote(spec.model_dump_json(), initial, dataset)
    )


@dataclass
class _InFlight:
    rank: int
    read_version: int
    update: Any


class AsyncLoop:
    """Runs ``total_steps`` rounds of W updates each on ``group``'s workers, applied by
    ``server``; reads stop requests from ``steering``. Replaces dead workers in ``group``.

    ``start`` launches the first workers and evaluates the starting point; each ``round``
    then applies the next W updates and reports their ``StepMetrics`` (with each update's
    staleness); ``finish`` evaluates the end point.
    """

    def __init__(
        self,
        spec: JobSpec,
        group: WorkerGroup,
        server: Any,
        steering: Steering,
        *,
        total_steps: int,
        numel: int,
    ) -> None:
        self.spec = spec
        self.group = group
        self.server = server
        self.steering = steering
        self.total_steps = total_steps
        self.numel = numel
        self.world = spec.workers.count
        self.tau = spec.exchange.max_staleness
        self.total_updates = total_steps * self.world
        self.version = 0
        self.launched = 0
        self.local_steps = [0] * self.world
        self.in_flight: dict[Any, _InFlight] = {}
        self.params: Any = None
        # Parameters too large to travel inside the call go in a list, so the worker fetches
        # them itself and times the wait; smaller ones arrive with the call (nothing to wait for).
        self.fetched = numel * 4 >= INLINE_BYTES
        self.replaced: set[int] = set()  # ranks whose replacement has not delivered an update
        self.idle: list[int] = []
        self._round_started = 0.0

    def start(self) -> list[Happening]:
        """Launch the first ``max_staleness + 1`` workers; evaluate the starting point."""
        self.params = self.server.params.remote()
        for rank in range(min(self.world, self.tau + 1, self.total_updates)):
            self._launch(rank)
        self.idle = [rank for rank in range(self.world) if rank > self.tau]
        evaluation = EvalMetrics(**ray.get(self.server.evaluate.remote(0)))
        self._round_started = time.perf_counter()
        return [Evaluated(evaluation)]

    def round(self) -> RoundOutcome:
        """Apply updates, oldest read first, until the next W have been applied (or the job
        is asked to stop: ``stopped``); replace the workers that die meanwhile."""
        world = self.world
        happened: list[Happening] = []
        applied: list[tuple[dict[str, Any], int]] = []
        while self.version < self.total_updates:
            if self.steering.stopping():
                return RoundOutcome(happened, stopped=True)
            ready = next(iter(self.in_flight))  # launched first, so read the oldest parameters
            entry = self.in_flight.pop(ready)
            (info,) = gather([ready], self.version // world, ranks=[entry.rank])
            if isinstance(info, WorkerDiedError):
                happened.append(self._replace(entry, info))
                continue
            self.replaced.discard(entry.rank)
            applied.append((info, self.version - entry.read_version))
            self.server.apply.remote(entry.update, info["lr"])
            self.version += 1
            self.params = self.server.params.remote()
            done = self.version % world == 0
            if done:
                now = time.perf_counter()
                happened += self._close_round(applied, now - self._round_started)
                self._round_started = now
            self.idle.append(entry.rank)
            while (
                self.idle
                and self.launched < self.total_updates
                and len(self.in_flight) < self.tau + 1
            ):
                self._launch(self.idle.pop(0))
            if done:
                break
        return RoundOutcome(happened)

    def finish(self) -> list[Happening]:
        """Evaluate the end point (a sampling job's samples with it)."""
        evaluation = ray.get(self.server.evaluate.remote(self.total_steps))
        return [Evaluated(EvalMetrics(**evaluation))]

    def _close_round(
        self, applied: list[tuple[dict[str, Any], int]], round_s: float
    ) -> list[Happening]:
        """The metrics of the round ``applied`` completed, and the evaluation due after it."""
        round_index = self.version // self.world - 1
        stats = [(info["stats"], staleness) for info, staleness in applied]
        lr = applied[-1][0]["lr"]
        metrics = round_metrics(round_index, lr, stats, self.world, self.numel, round_s)
        happened: list[Happening] = [StepDone(metrics, [item for item, _ in stats])]
        every = self.spec.eval.every
        if every and (round_index + 1) % every == 0 and self.version < self.total_updates:
            evaluation = ray.get(self.server.evaluate.remote(round_index + 1))
            happened.append(Evaluated(EvalMetrics(**evaluation)))
        return happened

    def _launch(self, rank: int) -> None:
        params = [self.params] if self.fetched else self.params
        update, info = (
            self.group.members[rank]
            .actor.compute_at.options(num_returns=2)
            .remote(self.local_steps[rank], params, self.version)
        )
        self.in_flight[info] = _InFlight(rank, self.version, update)
        self.local_steps[rank] += 1
        self.launched += 1

    def _replace(self, entry: _InFlight, error: WorkerDiedError) -> Note:
        """Replace the dead worker of ``entry`` in place and launch it on the newest
        parameters; fails the job when the rank's last replacement died too, or the new
        one is not built within ``workers.wait_s``."""
        if entry.rank in self.replaced:
            raise TrainingError(
                f"worker {entry.rank} died again before its replacement delivered an update",
                step=error.step,
                rank=entry.rank,
            )
        member = self.group.members[entry.rank]
        fresh = self.group.replace(member, entry.rank, self.world)
        built = fresh.actor.numel.remote()

        def ready() -> bool:
            return bool(ray.wait([built], timeout=0)[0]) or self.steering.stopping()

        wait_s = self.spec.workers.wait_s
        if not wait_until(ready, wait_s, REPLACE_POLL_S):
            raise TrainingError(
                f"worker {entry.rank}'s replacement was not placed within "
                f"{wait_s:g}s; the cluster has {ray.available_resources()} free",
                step=error.step,
                rank=entry.rank,
            )
        self.replaced.add(entry.rank)
        self.launched -= 1  # its update is lost; another one is computed in its place
        note = Note(
            SupervisorEventKind.WORKER,
            f"worker {entry.rank} (slot {member.slot}) died after {self.version} updates were "
            f"applied; its update in flight and its memory are lost; a new worker "
            f"(slot {fresh.slot}) takes its place",
            {
                "rank": entry.rank,
                "slot": member.slot,
                "new_slot": fresh.slot,
                "applied": self.version,
            },
        )
        self._launch(entry.rank)
        return note
