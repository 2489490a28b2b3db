"""The job supervisor: places the workers, drives the loop step by step, decides.

A plain class; ``launch.py`` makes it a detached, named Ray actor (``job-<id>`` in the
``sparsetrain`` namespace) so a job outlives the process that started it. ``start`` returns
at once and training runs on a background thread, so ``progress``, ``metrics``, ``scale``
and ``stop`` calls stay responsive while a job runs.

The loops (``sync_loop``, ``async_loop``) return what happened at each call; the supervisor
records it (``journal``) and makes every decision: the target size, its own state
(``SupervisorState``), when to checkpoint, when to wait for workers and when to fail, with
which ``ErrorKind``.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any

import ray
import torch

from sparsetrain.errors import CheckpointError, DataError, SpecError, TrainingError
from sparsetrain.spec import JobSpec
from sparsetrain.spec.aggregation import runtime_problem
from sparsetrain.supervision import ErrorKind, SupervisorEventKind, SupervisorState
from sparsetrain.workers.models.buffers import refuse_async_buffers
from sparsetrain.workers.runtime.async_loop import AsyncLoop, start_parameter_server
from sparsetrain.workers.runtime.collective_loop import CollectiveLoop
from sparsetrain.workers.runtime.exchange import Exchange, build_exchange
from sparsetrain.workers.runtime.gather import WorkersLostError
from sparsetrain.workers.runtime.group import Member, WorkerGroup
from sparsetrain.workers.runtime.job_checkpoints import JobCheckpoints
from sparsetrain.workers.runtime.journal import Journal
from sparsetrain.workers.runtime.observation import Observation
from sparsetrain.workers.runtime.outcomes import (
    CheckpointState,
    Evaluated,
    Happening,
    MembersChanged,
    Note,
    Steering,
    StepDone,
)
from sparsetrain.workers.runtime.placement import check_resources, initial_size
from sparsetrain.workers.runtime.results import keep_results
from sparsetrain.workers.runtime.sync_loop import SyncLoop
from sparsetrain.workers.runtime.telemetry import JobTelemetry
from sparsetrain.workers.training.prepare import prepare

__all__ = ["Supervisor", "check_resources"]

# The error kind a job fails with, by the exception that ended it (first match wins).
_ERROR_KINDS: tuple[tuple[type[Exception], ErrorKind], ...] = (
    (WorkersLostError, ErrorKind.WORKERS_LOST),
    (SpecError, ErrorKind.SPEC),
    (TrainingError, ErrorKind.TRAINING),
    (CheckpointError, ErrorKind.CHECKPOINT),
)


class Supervisor:
    """Runs one job to completion on the current Ray cluster."""

    def __init__(
        self,
        job_id: str,
        spec_json: str,
        storage: str,
        verify_replicas: bool = False,
        faults: list[dict[str, Any]] | None = None,
        target: int | None = None,
        cluster_autoscales: bool = False,
        epoch: int = 0,
    ) -> None:
        """``target`` overrides ``workers.count`` as the size to train at (a scale request
        that outlived an earlier supervisor); ``faults`` is passed to the workers for the
        chaos tests; ``cluster_autoscales`` skips the check that the cluster's current
        nodes can hold the job (placement then waits up to ``workers.wait_s``); ``epoch``
        says which launch of the job's supervisor this is (its events carry it)."""
        self.job_id = job_id
        self.spec = JobSpec.model_validate_json(spec_json)
        self.checkpoint_root = self.spec.checkpoint.root(storage, job_id)
        self.verify_replicas = verify_replicas
        self.faults = faults
        self.cluster_autoscales = cluster_autoscales
        self.steering = Steering(self.spec.workers.count if target is None else target)
        self.journal = Journal(epoch)
        self.checkpoints = JobCheckpoints(job_id, self.spec, self.checkpoint_root, self.journal)
        self.observation = Observation(job_id, self.spec, storage, self.journal)
        self.total_steps: int | None = None
        self.group: WorkerGroup | None = None
        self._thread: threading.Thread | None = None
        self._exchange: Exchange | None = None
        self._server: Any = None  # an async job's parameter server
        self._telemetry: JobTelemetry | None = None
        self._final: dict[str, Any] = {}
        self._setup: Any = None

    # ---- control, callable while the job runs -------------------------------------------
    def start(self) -> None:
        """Start training on a background thread; returns immediately."""
        if self._thread is None:
            self.journal.set_state(SupervisorState.RUNNING)
            self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the job to stop at the next step boundary."""
        self.steering.stop.set()

    def scale(self, count: int) -> int:
        """Set the target size; the group grows or shrinks at the next step boundaries.
        Raises ``ValueError`` outside [workers.min, workers.max]; returns the old target."""
        try:
            self.spec.workers.check_count(count)
        except SpecError:  # a plain ValueError crosses Ray to the caller intact
            bounds = f"[{self.spec.workers.min_count}, {self.spec.workers.max_count}]"
            raise ValueError(f"workers.count: {count} is outside [min, max] = {bounds}") from None
        if self.spec.exchange.mode == "async" and count != self.steering.target:
            raise ValueError("workers.count: async jobs cannot be resized")
        return self.steering.retarget(count)

    def progress(self) -> dict[str, Any]:
        """State (a ``SupervisorState``), steps done, the first step, total steps, live,
        target and standby workers, each worker's row (``worker_details``: see
        ``WorkerTable``), the error and its ``ErrorKind`` if the job failed."""
        group = self.group
        progress = self.journal.progress()
        return {
            **progress,
            "total_steps": self.total_steps,
            "workers": len(group.members) if group is not None else 0,
            "target": self.steering.target,
            "standby": len(group.ready) if group is not None else 0,
            "worker_details": self.observation.workers(group, progress["state"].is_final),
        }

    def metrics(self, since: int = 0) -> dict[str, list[dict[str, Any]]]:
        """Step records with step >= ``since`` and every evaluation at step >= ``since``."""
        return self.journal.metrics(since)

    def event_log(self, since: int = 0) -> list[dict[str, Any]]:
        """Events with ``seq >= since``: ``SupervisorEvent`` records as dicts (``epoch``,
        ``seq`` counting from 0 per supervisor, ``kind``, ``message``, ``data``)."""
        return self.journal.event_log(since)

    def membership(self) -> list[dict[str, Any]]:
        """Every membership change so far, in order (see ``workers.training.elastic``)."""
        return self.journal.membership()

    def checkpoint_list(self) -> list[dict[str, Any]]:
        """Checkpoints written so far: step, path, size."""
        return self.journal.checkpoint_list()

    def worker_pids(self) -> dict[int, int]:
        """Process id of every live worker by rank (for operators and the chaos tests)."""
        group = self.group
        members = list(group.members) if group is not None else []
        pids = ray.get([m.actor.pid.remote() for m in members])
        return dict(enumerate(pids))

    def pid(self) -> int:
        """This supervisor's process id."""
        return os.getpid()

    def result(self) -> dict[str, Any]:
        """Final parameters and memories (numpy), available once the job has succeeded."""
        return self._final

    # ---- what the loops report, and the decisions on it ---------------------------------------
    def _take(self, happened: list[Happening]) -> None:
        """Record what a loop reports: metrics (kept and exported), evaluations, membership
        changes and notes (as events)."""
        journal, telemetry = self.journal, self._telemetry
        for item in happened:
            if isinstance(item, StepDone):
                journal.record_step(item.metrics)
                self.observation.stepped(item.metrics)
                if telemetry is not None:
                    telemetry.record_step(item.metrics, item.ranks, self._setup.model.numel)
            elif isinstance(item, Evaluated):
                journal.record_eval(item.metrics)
                self.observation.evaluated(item.metrics)
                if telemetry is not None:
                    telemetry.record_eval(item.metrics)
            elif isinstance(item, MembersChanged):
                journal.change(item.change, item.message, item.data)
            elif isinstance(item, Note):
                journal.event(item.kind, item.message, item.data)

    def _retarget(self, count: int, reason: str) -> None:
        """Change the target size and record why (autoscaling)."""
        old = self.steering.retarget(count)
        if old != count:
            message = f"{reason}: target {old} -> {count} workers"
            self.journal.event(SupervisorEventKind.RESIZE, message, {"old": old, "new": count})

    def _enter(self, state: SupervisorState, message: str, **data: int | float | str) -> None:
        """Move to ``state`` and record the event that says why."""
        self.journal.set_state(state)
        self.journal.event(SupervisorEventKind.RESIZE, message, {"state": state.value, **data})

    # ---- the training run --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            try:
                self._train()
            finally:  # before the final state: the control plane may kill this actor then
                self.observation.close()
            stopped = self.steering.stopping()
            self.journal.set_state(
                SupervisorState.STOPPED if stopped else SupervisorState.SUCCEEDED
            )
        except Exception as error:  # reported through progress()
            kind = next((k for cls, k in _ERROR_KINDS if isinstance(error, cls)), None)
            if kind is not None:
                self.journal.fail(kind, str(error))
            else:
                if not isinstance(error, DataError):  # unexpected: the traceback goes to the log
                    traceback.print_exc(file=sys.stderr)
                    self.observation.failed()  # and to the job's, for its owner (user code)
                kind = ErrorKind.DATA if isinstance(error, DataError) else ErrorKind.INTERNAL
                self.journal.fail(kind, f"{type(error).__name__}: {error}")
        finally:
            self._release()

    def _train(self) -> None:
        spec = self.spec
        problem = runtime_problem(spec)  # every step runs its transport's one path
        if problem is not None:
            raise SpecError(("exchange", "aggregation"), problem)
        if not self.cluster_autoscales:
            check_resources(spec, ray.cluster_resources())
        setup = prepare(spec)  # validates the spec against the data and builds x_0
        if spec.exchange.mode == "async":
            refuse_async_buffers(setup.model.buffer_layout)
        self._setup = setup
        self.total_steps = total = setup.total_steps
        numel = setup.model.numel
        start, initial_params, epoch = 0, setup.model.flat.numpy(), 0
        states: list[dict[str, Any]] | None = None
        averager: dict[str, Any] | None = None
        if spec.resume_from is not None:
            resumed = self.checkpoints.resume(spec.resume_from, numel)
            start, initial_params = resumed.step, resumed.params.numpy()
            total_bytes = resumed.extra.get("bytes_total")
            self.journal.resumed_at(start, total_bytes if isinstance(total_bytes, int) else None)
            states, averager = resumed.workers, resumed.averager
            epoch = max((s.get("group") or {}).get("epoch", 0) for s in states)
        self.journal.started_at(start)
        self.observation.start(start)
        self.group = group = WorkerGroup(
            self.job_id,
            spec,
            ray.put(initial_params),
            self.faults,
            ray.put(setup.dataset),
            log_dir=self.observation.log_dir,
        )
        free = ray.available_resources()
        size = len(states) if states is not None else initial_size(spec, free)
        group.start(size, spec.workers.wait_s, states, averager)
        self._telemetry = JobTelemetry(self.job_id)
        if spec.exchange.mode == "async":
            self._train_async(group, total, numel)
            return
        final = self._train_sync(group, start, total, epoch)
        if final is not None:
            self._finish(final.params, buffers=final.snapshots[0]["state"].get("buffers"))

    def _train_sync(
        self, group: WorkerGroup, start: int, total: int, epoch: int
    ) -> CheckpointState | None:
        """Train steps ``start``..``total``-1; returns the last checkpoint's state (the final
        parameters and each rank's state; None if stopped). Checkpoints every
        ``checkpoint.every`` steps and at the end."""
        spec = self.spec
        self._exchange = build_exchange(spec, self.job_id)
        loop_class = CollectiveLoop if self._exchange.runs_chunks else SyncLoop
        loop = loop_class(
            spec,
            group,
            self._exchange,
            self.steering,
            epoch=epoch,
            numel=self._setup.model.numel,
            verify_replicas=self.verify_replicas,
            buffers=not self._setup.model.buffer_layout.empty,
        )
        every, checkpoint_every = spec.eval.every, spec.checkpoint.every
        step = start
        while step < total:
            if self.steering.stopping():
                return None
            leavers = self._boundary(loop, step)
            if leavers is None:
                return None
            evaluate = step == start or bool(every and step % every == 0)
            if isinstance(loop, CollectiveLoop):  # a chunk of steps, ending at a boundary
                outcome, done = loop.advance(step, total, leavers, evaluate)
            else:
                outcome, done = loop.step(step, leavers, evaluate), step + 1
            self._take(outcome.happened)
            if outcome.survivors == 0:
                raise WorkersLostError(f"all {outcome.world} workers were lost", step=step)
            step = done
            if checkpoint_every and done % checkpoint_every == 0 and done < total:
                state = loop.checkpoint_state(done)
                self._take(state.happened)
                self.checkpoints.save(state)
        finished = loop.finish(total)
        self._take([Evaluated(finished.evaluation)])
        self.checkpoints.save(finished.state)
        self._take(finished.happened)
        return finished.state

    def _boundary(self, loop: SyncLoop, step: int) -> list[Member] | None:
        """Settle the group before ``step``: the autoscaled target, joiners, leavers; below
        ``workers.min``, wait (state ``resizing``) or fail. Returns the members that leave
        after ``step``; None when the job was asked to stop while it waited."""
        want = loop.autoscale()
        if want is not None:
            self._retarget(want, "autoscale: the cluster has free resources")
        boundary = loop.boundary(step)
        self._take(boundary.happened)
        below = boundary.below_min
        if below is None:
            return boundary.leavers
        self._enter(
            SupervisorState.RESIZING,
            f"{below.live} worker(s) left, below min {below.min_count}: waiting up to "
            f"{below.wait_s:g}s for replacements before step {step}",
            step=step,
            workers=below.live,
            min_count=below.min_count,
        )
        enough, happened = loop.wait_for_workers(below)
        self._take(happened)
        if not enough:
            raise TrainingError(
                f"only {len(loop.live)} worker(s) after waiting {below.wait_s:g}s "
                f"for min {below.min_count}; the cluster has {ray.available_resources()} free",
                step=step,
            )
        if self.steering.stopping():
            return None
        self._enter(
            SupervisorState.RUNNING, f"training again with {below.min_count}+ workers", step=step
        )
        admitted = loop.admit(step)
        self._take(admitted.happened)
        return admitted.leavers

    def _train_async(self, group: WorkerGroup, total: int, numel: int) -> None:
        """Run ``total`` rounds on a parameter server; keep the result unless stopped."""
        self._server = server = start_parameter_server(
            self.job_id, self.spec, group.initial, group.dataset
        )
        loop = AsyncLoop(self.spec, group, server, self.steering, total_steps=total, numel=numel)
        self._take(loop.start())
        for _ in range(total):
            outcome = loop.round()
            self._take(outcome.happened)
            if outcome.stopped:
                return
        self._take(loop.finish())
        if not self.steering.stopping():
            self._finish(ray.get(server.params.remote()), samples=server.samples.remote())

    def _finish(
        self, params: Any, samples: Any = None, buffers: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Keep the results and write the model (and samples) file, with the replicas'
        averaged ``buffers`` (default: the model's initial ones); the sync loop has written
        the last checkpoint."""
        assert self.group is not None
        model, root = self._setup.model, self.checkpoint_root
        self._final = keep_results(
            self.spec, self.group, model, root, params, samples, buffers=buffers
        )

    def _release(self) -> None:
        """Kill what the job holds: the exchange's actors, the parameter server, the group."""
        if self._exchange is not None:
            self._exchange.close()
        if self._server is not None:
            ray.kill(self._server)
        if self.group is not None:
            self.group.close()
