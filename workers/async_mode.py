"""Asynchronous training with bounded staleness: a parameter server and its driver loop.

The parameter server (a plain class, made an actor by the supervisor) holds the parameters
and applies one worker's update at a time, scaled by 1/W as in the synchronous mean. The
driver keeps at most ``max_staleness + 1`` workers computing at once, each on the newest
parameters when it starts, and applies updates in the order their parameters were read.
An update therefore waits behind at most the ``max_staleness`` others that were in flight
when it read the parameters: none is applied more than ``max_staleness`` versions stale
(Chen et al., "Stochastic Gradient MCMC with Stale Gradients").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression import decode
from sparsetrain.workers.evaluate import evaluate_setup
from sparsetrain.workers.schedules import WeightedAverage, averaging_shift
from sparsetrain.workers.setup import prepare
from sparsetrain.workers.step import RankStats

if TYPE_CHECKING:
    from sparsetrain.workers.supervisor import Supervisor


class ParameterServer:
    """Holds the parameters; ``apply`` mutates them, one update at a time."""

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

    def apply(self, update: np.ndarray) -> int:
        """x <- x - update / W; returns the new version (the number of updates applied)."""
        decode(bytes(update)).add_to(self.setup.model.flat, alpha=-1.0 / self.world)
        self.version += 1
        if self.averager is not None and self.version % self.world == 0:
            self.averager.update(self.setup.model.flat, self.version // self.world)
        return self.version

    def params(self) -> np.ndarray:
        return self.setup.model.flat.numpy()

    def evaluate(self, step: int) -> dict[str, Any]:
        averaged = self.averager.value if self.averager is not None else None
        return evaluate_setup(self.setup, step, averaged).model_dump()


@dataclass
class _InFlight:
    rank: int
    read_version: int
    update: Any


def train_async(supervisor: Supervisor, total_steps: int, numel: int, initial: Any) -> Any:
    """Run ``total_steps`` rounds of W updates each; returns the parameter server handle.

    Records one ``StepMetrics`` per round (with each update's staleness) on ``supervisor``.
    """
    spec = supervisor.spec
    world, tau = spec.workers.count, spec.exchange.max_staleness
    server: Any = (
        ray.remote(ParameterServer)
        .options(name=f"job-{supervisor.job_id}-ps", namespace="sparsetrain", num_cpus=0)
        .remote(spec.model_dump_json(), initial)
    )
    supervisor.helpers.append(server)
    total_updates = total_steps * world
    version, launched = 0, 0
    local_steps = [0] * world
    in_flight: dict[Any, _InFlight] = {}
    params = server.params.remote()

    def launch(rank: int) -> None:
        nonlocal launched
        update, info = (
            supervisor.workers[rank]
            .compute_at.options(num_returns=2)
            .remote(local_steps[rank], params, version)
        )
        in_flight[info] = _InFlight(rank, version, update)
        local_steps[rank] += 1
        launched += 1

    for rank in range(min(world, tau + 1, total_updates)):
        launch(rank)
    idle = [rank for rank in range(world) if rank > tau]
    applied: list[tuple[dict[str, Any], int]] = []
    every = spec.eval.every
    supervisor.record_eval(EvalMetrics(**ray.get(server.evaluate.remote(0))))
    while version < total_updates:
        if supervisor.stopping():
            return server
        ready = next(iter(in_flight))  # launched first, so read the oldest parameters
        entry = in_flight.pop(ready)
        info = supervisor.gather([ready], version // world, ranks=[entry.rank])[0]
        applied.append((info, version - entry.read_version))
        server.apply.remote(entry.update)
        version += 1
        params = server.params.remote()
        if version % world == 0:
            round_index = version // world - 1
            metrics = _round_metrics(round_index, applied, world, numel)
            supervisor.record_step(metrics, [info["stats"] for info, _ in applied], numel)
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


def _round_metrics(
    step: int, applied: list[tuple[dict[str, Any], int]], world: int, numel: int
) -> StepMetrics:
    stats: list[RankStats] = [info["stats"] for info, _ in applied]
    sizes = [0] * world
    for item in stats:
        sizes[item.rank] += item.nbytes
    return StepMetrics(
        step=step,
        loss=sum(item.loss for item in stats) / len(stats),
        lr=applied[-1][0]["lr"],
        bytes_sent=sum(sizes),
        bytes_per_worker=sizes,
        density=sum(item.nnz for item in stats) / (len(stats) * numel),
        compute_s=max(item.compute_s for item in stats),
        compress_s=max(item.compress_s for item in stats),
        exchange_s=0.0,
        staleness=[staleness for _, staleness in applied],
    )
