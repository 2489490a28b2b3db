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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from sparsetrain.errors import TrainingError
from sparsetrain.metrics import EvalMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression import decode_view
from sparsetrain.workers.runtime.group import WorkerGroup, wait_until
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.samplers import build_chain
from sparsetrain.workers.training.schedules import WeightedAverage, averaging_shift
from sparsetrain.workers.training.step import round_metrics

if TYPE_CHECKING:
    from sparsetrain.workers.runtime.supervisor import Supervisor


REPLACE_POLL_S = 0.05
INLINE_BYTES = 100 * 1024  # Ray passes smaller objects inside the call itself


class WorkerDiedError(TrainingError):
    """A worker's actor died (its process was killed or crashed) while computing."""


class ParameterServer:
    """Holds the parameters; ``apply`` mutates them, one update at a time. For a sampling
    job it also holds the chain: one Langevin noise draw per applied update, the samples."""

    def __init__(self, spec_json: str, initial: np.ndarray) -> None:
        spec = JobSpec.model_validate_json(spec_json)
        self.setup = prepare(spec)
        self.world = spec.workers.count
        self.version = 0
        self.setup.model.flat.copy_(torch.from_numpy(np.array(initial, dtype=np.float32)))
        self.averager = (
            WeightedAverage(self.setup.model.flat, averaging_shift(spec.averaging, spec.schedule))
            if spec.averaging is not None
            else None
        )
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


@dataclass
class _InFlight:
    rank: int
    read_version: int
    update: Any


def train_async(supervisor: Supervisor, group: WorkerGroup, total_steps: int, numel: int) -> Any:
    """Run ``total_steps`` rounds of W updates each on ``group``'s workers (started from
    ``group.initial``); returns the parameter server handle. Replaces dead workers in
    ``group``.

    Records one ``StepMetrics`` per round (with each update's staleness) on ``supervisor``.
    """
    spec = supervisor.spec
    world, tau = spec.workers.count, spec.exchange.max_staleness
    server: Any = (
        ray.remote(ParameterServer)
        .options(name=f"job-{supervisor.job_id}-ps", namespace="sparsetrain", num_cpus=0)
        .remote(spec.model_dump_json(), group.initial)
    )
    supervisor.helpers.append(server)
    total_updates = total_steps * world
    version, launched = 0, 0
    local_steps = [0] * world
    in_flight: dict[Any, _InFlight] = {}
    params = server.params.remote()
    # Parameters too large to travel inside the call go in a list, so the worker fetches
    # them itself and times the wait; smaller ones arrive with the call (nothing to wait for).
    fetched = numel * 4 >= INLINE_BYTES

    def launch(rank: int) -> None:
        nonlocal launched
        update, info = (
            group.members[rank]
            .actor.compute_at.options(num_returns=2)
            .remote(local_steps[rank], [params] if fetched else params, version)
        )
        in_flight[info] = _InFlight(rank, version, update)
        local_steps[rank] += 1
        launched += 1

    replaced: set[int] = set()  # ranks whose replacement has not delivered an update yet

    def replace(entry: _InFlight, error: WorkerDiedError) -> None:
        nonlocal launched
        if entry.rank in replaced:
            raise TrainingError(
                f"worker {entry.rank} died again before its replacement delivered an update",
                step=error.step,
                rank=entry.rank,
            )
        member = group.members[entry.rank]
        fresh = group.replace(member, entry.rank, world)
        built = fresh.actor.numel.remote()

        def ready() -> bool:
            return bool(ray.wait([built], timeout=0)[0]) or supervisor.stopping()

        if not wait_until(ready, spec.workers.wait_s, REPLACE_POLL_S):
            raise TrainingError(
                f"worker {entry.rank}'s replacement was not placed within "
                f"{spec.workers.wait_s:g}s; the cluster has {ray.available_resources()} free",
                step=error.step,
                rank=entry.rank,
            )
        replaced.add(entry.rank)
        launched -= 1  # its update is lost; another one is computed in its place
        supervisor.event(
            "worker",
            f"worker {entry.rank} (slot {member.slot}) died after {version} updates were "
            f"applied; its update in flight and its memory are lost; a new worker "
            f"(slot {fresh.slot}) takes its place",
        )
        launch(entry.rank)

    for rank in range(min(world, tau + 1, total_updates)):
        launch(rank)
    idle = [rank for rank in range(world) if rank > tau]
    applied: list[tuple[dict[str, Any], int]] = []
    every = spec.eval.every
    supervisor.record_eval(EvalMetrics(**ray.get(server.evaluate.remote(0))))
    round_started = time.perf_counter()
    while version < total_updates:
        if supervisor.stopping():
            return server
        ready = next(iter(in_flight))  # launched first, so read the oldest parameters
        entry = in_flight.pop(ready)
        try:
            info = supervisor.gather([ready], version // world, ranks=[entry.rank])[0]
        except WorkerDiedError as error:
            replace(entry, error)
            continue
        replaced.discard(entry.rank)
        applied.append((info, version - entry.read_version))
        server.apply.remote(entry.update, info["lr"])
        version += 1
        params = server.params.remote()
        if version % world == 0:
            round_index = version // world - 1
            stats = [(info["stats"], staleness) for info, staleness in applied]
            now = time.perf_counter()
            lr = applied[-1][0]["lr"]
            metrics = round_metrics(round_index, lr, stats, world, numel, now - round_started)
            round_started = now
            supervisor.record_step(metrics, [item for item, _ in stats], numel)
            applied = []
            if every and (round_index + 1) % every == 0 and version < total_updates:
                supervisor.record_eval(
                    EvalMetrics(**ray.get(server.evaluate.remote(round_index + 1)))
                )
        idle.append(entry.rank)
        while idle and launched < total_updates and len(in_flight) < tau + 1:
            launch(idle.pop(0))
    supervisor.record_eval(EvalMetrics(**ray.get(server.evaluate.remote(total_steps))))
    return server
