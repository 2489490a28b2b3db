"""The job supervisor: places the workers, drives the steps, keeps the metrics and events.

A plain class; ``launch.py`` makes it a detached, named Ray actor (``job-<id>`` in the
``sparsetrain`` namespace) so a job outlives the process that started it. ``start`` returns
at once and training runs on a background thread, so ``progress``, ``metrics``, ``scale``
and ``stop`` calls stay responsive while a job runs.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any

import numpy as np
import ray
import torch

from sparsetrain.errors import CheckpointError, SpecError, TrainingError
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.async_loop import WorkerDiedError, train_async
from sparsetrain.workers.runtime.group import NAMESPACE, WorkerGroup, worker_name
from sparsetrain.workers.runtime.placement import check_resources, initial_size
from sparsetrain.workers.runtime.sync_loop import SyncLoop, WorkersLostError, task_error
from sparsetrain.workers.runtime.telemetry import JobTelemetry
from sparsetrain.workers.training.checkpoint import (
    Checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.export import export_model, export_samples
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.resume import ResumePoint, checkpoint_name, resume_point
from sparsetrain.workers.training.step import RankStats

__all__ = [
    "NAMESPACE",
    "ResumePoint",
    "Supervisor",
    "check_resources",
    "resume_point",
    "worker_name",
]


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
    ) -> None:
        """``target`` overrides ``workers.count`` as the size to train at (a scale request
        that outlived an earlier supervisor); ``faults`` is passed to the workers for the
        chaos tests; ``cluster_autoscales`` skips the check that the cluster's current
        nodes can hold the job (placement then waits up to ``workers.wait_s``)."""
        self.job_id = job_id
        self.spec = JobSpec.model_validate_json(spec_json)
        self.checkpoint_root = self.spec.checkpoint.path or f"{storage.rstrip('/')}/{job_id}"
        self.checkpoints: list[dict[str, Any]] = []
        self.verify_replicas = verify_replicas
        self.faults = faults
        self.cluster_autoscales = cluster_autoscales
        self.target = self.spec.workers.count if target is None else target
        self.standby = 0  # hot spares built and waiting
        self.steps: list[StepMetrics] = []
        self.evals: list[EvalMetrics] = []
        self.events: list[dict[str, Any]] = []
        self.changes: list[Change] = []
        self.total_steps: int | None = None
        self.state = "created"
        self.error: str | None = None
        self.error_kind: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.group: WorkerGroup | None = None
        self.helpers: list[Any] = []  # reducer / parameter server actors, killed at the end
        self._telemetry: JobTelemetry | None = None
        self._final: dict[str, Any] = {}
        self._setup: Any = None
        self._first_step = 0  # a resumed job's first step
        self._started_from: int | None = None  # the same, once known
        self._bytes_total: int | None = 0  # bytes sent so far (None: a resume lost count)

    # ---- control, callable while the job runs -------------------------------------------
    def start(self) -> None:
        """Start training on a background thread; returns immediately."""
        if self._thread is None:
            self.state = "running"
            self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the job to stop at the next step boundary."""
        self._stop.set()

    def scale(self, count: int) -> int:
        """Set the target size; the group grows or shrinks at the next step boundaries.
        Raises ``ValueError`` outside [workers.min, workers.max]; returns the old target."""
        workers = self.spec.workers
        if not workers.floor <= count <= workers.ceiling:
            raise ValueError(
                f"workers.count: {count} is outside [min, max] = "
                f"[{workers.floor}, {workers.ceiling}]"
            )
        if self.spec.exchange.mode == "async" and count != self.target:
            raise ValueError("workers.count: async jobs cannot be resized")
        with self._lock:
            old, self.target = self.target, count
        return old

    def progress(self) -> dict[str, Any]:
        """State, steps done, total steps, live, target and standby workers, the error if
        the job failed."""
        with self._lock:
            group = self.group
            return {
                "state": self.state,
                "step": self._first_step + len(self.steps),
                "first_step": self._started_from,
                "total_steps": self.total_steps,
                "workers": len(group.members) if group is not None else 0,
                "target": self.target,
                "standby": self.standby,
                "error": self.error,
                "error_kind": self.error_kind,
            }

    def metrics(self, since: int = 0) -> dict[str, list[dict[str, Any]]]:
        """Step records with step >= ``since`` and every evaluation at step >= ``since``."""
        with self._lock:
            first = max(0, since - self._first_step)  # records are consecutive steps
            return {
                "steps": [m.model_dump() for m in self.steps[first:]],
                "evals": [e.model_dump() for e in self.evals if e.step >= since],
            }

    def event_log(self, since: int = 0) -> list[dict[str, Any]]:
        """Resize and worker events with ``seq >= since`` (seq counts from 0 per supervisor)."""
        with self._lock:
            return list(self.events[since:])

    def membership(self) -> list[dict[str, Any]]:
        """Every membership change so far, in order (see ``workers.training.elastic``)."""
        with self._lock:
            return [change.as_dict() for change in self.changes]

    def checkpoint_list(self) -> list[dict[str, Any]]:
        """Checkpoints written so far: step, path, size."""
        with self._lock:
            return list(self.checkpoints)

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

    # ---- used by the training loops ---------------------------------------------------------
    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stop.is_set()

    def set_target(self, count: int, reason: str) -> None:
        """Change the target size and record why (autoscaling)."""
        with self._lock:
            old, self.target = self.target, count
        if old != count:
            self.event("resize", f"{reason}: target {old} -> {count} workers")

    def set_state(self, state: str, message: str) -> None:
        with self._lock:
            self.state = state
        self.event("resize", message)

    def event(self, kind: str, message: str) -> None:
        """Keep an event for the control plane (``kind``: resize, worker or checkpoint)."""
        with self._lock:
            self.events.append({"seq": len(self.events), "kind": kind, "message": message})

    def change(self, change: Change, message: str) -> None:
        """Record a membership change and its event."""
        with self._lock:
            self.changes.append(change)
        self.event("worker" if change.kind == "lost" else "resize", message)

    def record_step(self, metrics: StepMetrics, ranks: list[RankStats], numel: int) -> None:
        """Keep a step's metrics, with the run's bytes so far set on them (mutates
        ``metrics.bytes_total``), and export them."""
        with self._lock:
            if self._bytes_total is not None:
                self._bytes_total += metrics.bytes_sent
                metrics.bytes_total = self._bytes_total
            self.steps.append(metrics)
        if self._telemetry is not None:
            self._telemetry.record_step(metrics, ranks, numel)

    def record_eval(self, metrics: EvalMetrics) -> None:
        """Keep an evaluation and export it."""
        with self._lock:
            self.evals.append(metrics)
        if self._telemetry is not None:
            self._telemetry.record_eval(metrics)

    @property
    def workers(self) -> list[Any]:
        """The live workers' actor handles, by rank."""
        return [m.actor for m in self.group.members] if self.group is not None else []

    def gather(self, refs: list[Any], step: int, ranks: list[int] | None = None) -> list[Any]:
        """``ray.get`` each rank's result (async). A worker's exception fails the job naming
        its rank; a dead worker raises ``WorkerDiedError``.

        ``ranks`` names the rank behind each reference (default: 0, 1, ...).
        """
        results = []
        for rank, ref in zip(ranks or range(len(refs)), refs, strict=True):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayTaskError as error:
                raise task_error(error, rank, step) from None
            except ray.exceptions.RayActorError as error:
                message = f"worker {rank} died ({type(error).__name__})"
                raise WorkerDiedError(message, step=step, rank=rank) from None
        return results

    def checkpoint(self, done: int, snapshots: list[dict[str, Any]], params: Any) -> None:
        """Write the checkpoint of step boundary ``done`` atomically from the live ranks'
        ``snapshots`` and the replicas' ``params``."""
        info = save_checkpoint(
            self.checkpoint_root,
            Checkpoint(
                step=done,
                params=torch.from_numpy(np.array(params)),
                workers=[snapshot["state"] for snapshot in snapshots],
                averager=snapshots[0]["averager"],
                spec_json=self.spec.model_dump_json(),
                extra={"job_id": self.job_id, "bytes_total": self._bytes_total},
            ),
        )
        prune_checkpoints(self.checkpoint_root, self.spec.checkpoint.keep)
        with self._lock:
            self.checkpoints.append({"step": info.step, "path": info.path, "nbytes": info.nbytes})

    # ---- the training run --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._train()
            with self._lock:
                self.state = "stopped" if self._stop.is_set() else "succeeded"
        except WorkersLostError as error:
            self._fail("WorkersLost", str(error))
        except (SpecError, TrainingError, CheckpointError) as error:
            self._fail(type(error).__name__, str(error))
        except Exception as error:  # reported through progress(); the traceback goes to the log
            traceback.print_exc(file=sys.stderr)
            self._fail(type(error).__name__, f"{type(error).__name__}: {error}")
        finally:
            self._release()

    def _fail(self, kind: str, message: str) -> None:
        with self._lock:
            self.state = "failed"
            self.error_kind = kind
            self.error = message

    def _train(self) -> None:
        spec = self.spec
        if not self.cluster_autoscales:
            check_resources(spec, ray.cluster_resources())
        setup = prepare(spec)  # validates the spec against the data and builds x_0
        self._setup = setup
        self.total_steps = total = setup.total_steps
        numel = setup.model.numel
        start, initial_params, epoch = 0, setup.model.flat.numpy(), 0
        states: list[dict[str, Any]] | None = None
        averager: dict[str, Any] | None = None
        if spec.resume_from is not None:
            resumed = self._resume(spec.resume_from, numel)
            start, initial_params = resumed.step, resumed.params.numpy()
            self._first_step = start
            total_bytes = resumed.extra.get("bytes_total")
            self._bytes_total = total_bytes if isinstance(total_bytes, int) else None
            states, averager = resumed.workers, resumed.averager
            epoch = max((s.get("group") or {}).get("epoch", 0) for s in states)
        self._started_from = start
        group = WorkerGroup(self.job_id, spec, ray.put(initial_params), self.faults)
        with self._lock:
            self.group = group
        free = ray.available_resources()
        size = len(states) if states is not None else initial_size(spec, free)
        group.start(size, spec.workers.wait_s, states, averager)
        self._telemetry = JobTelemetry(self.job_id)
        if spec.exchange.mode == "async":
            server = train_async(self, group, total, numel)
            if not self.stopping():
                self._finish(ray.get(server.params.remote()), samples=server.samples.remote())
            return
        params = SyncLoop(self, group, epoch).run(start, total, numel)
        if params is not None:
            self._finish(params)

    def _resume(self, source: str, numel: int) -> Checkpoint:
        """Load the checkpoint to resume from (``resume_point``) and record, as events, the
        one used and every newer one that was skipped, with why."""
        found = resume_point(source, numel, self.spec.workers.ceiling)
        for path, problem in found.skipped:
            self.event("checkpoint", f"skipped checkpoint {checkpoint_name(path)}: {problem}")
        self.event(
            "checkpoint",
            f"resumed from checkpoint {checkpoint_name(found.path)} (step {found.checkpoint.step})",
        )
        return found.checkpoint

    def _finish(self, params: Any, samples: Any = None) -> None:
        """Keep the final parameters and the live members' memories, write the model file
        and a sampling job's samples file (``samples``: a reference to them; by default the
        first live member's). The sync loop has written the last checkpoint."""
        group = self.group
        assert group is not None
        extra: dict[str, Any] = {}
        if self.spec.objective == "sample":
            extra["samples"] = (
                ray.get(samples)
                if samples is not None
                else self._from_live(lambda actor: actor.samples.remote(), first=True)[0]
            )
            export_samples(self.checkpoint_root, torch.from_numpy(np.array(extra["samples"])))
        self._final = {
            "params": params,
            "memories": self._from_live(lambda actor: actor.memory.remote()),
            **extra,
        }
        export_model(self.checkpoint_root, self._setup.model, torch.from_numpy(np.array(params)))

    def _from_live(self, call: Any, first: bool = False) -> list[Any]:
        """``call(actor)``'s result from every member still alive (with ``first``, from the
        first one only); raises ``WorkersLostError`` when none is."""
        group = self.group
        assert group is not None
        results = []
        for member in group.members:
            try:
                results.append(ray.get(call(member.actor)))
            except ray.exceptions.RayActorError:
                continue
            if first:
                break
        if not results:
            raise WorkersLostError("every worker was lost before the results were kept")
        return results

    def _release(self) -> None:
        for helper in self.helpers:
            ray.kill(helper)
        self.helpers = []
        if self.group is not None:
            self.group.close()
