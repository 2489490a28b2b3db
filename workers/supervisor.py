"""The job supervisor: places the workers, drives the steps, keeps the metrics.

A plain class; ``launch.py`` makes it a detached, named Ray actor (``job-<id>`` in the
``sparsetrain`` namespace) so a job outlives the process that started it. ``start`` returns
at once and training runs on a background thread, so ``progress``, ``metrics`` and ``stop``
calls stay responsive while a job runs.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sparsetrain.errors import CheckpointError, SpecError, TrainingError
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.async_mode import train_async
from sparsetrain.workers.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sparsetrain.workers.export import export_model
from sparsetrain.workers.reducer import Reducer
from sparsetrain.workers.setup import prepare
from sparsetrain.workers.step import RankStats, step_metrics
from sparsetrain.workers.telemetry import JobTelemetry
from sparsetrain.workers.worker import TrainingWorker

NAMESPACE = "sparsetrain"
PLACEMENT_TIMEOUT_S = 60.0


def worker_name(job_id: str, rank: int) -> str:
    return f"job-{job_id}-worker-{rank}"


def check_resources(spec: JobSpec, available: dict[str, float]) -> None:
    """Raise ``SpecError`` when the cluster can never hold the job's workers."""
    count = spec.workers.count
    asks = {"CPU": spec.workers.cpus * count, "GPU": spec.workers.gpus * count}
    for resource, asked in asks.items():
        have = float(available.get(resource, 0.0))
        if asked > have + 1e-9:
            field = "cpus" if resource == "CPU" else "gpus"
            raise SpecError(
                ("workers", field),
                f"{count} workers x {asked / count:g} {resource} = {asked:g} {resource} asked, "
                f"the Ray cluster has {have:g}",
            )


class Supervisor:
    """Runs one job to completion on the current Ray cluster."""

    def __init__(
        self, job_id: str, spec_json: str, storage: str, verify_replicas: bool = False
    ) -> None:
        self.job_id = job_id
        self.spec = JobSpec.model_validate_json(spec_json)
        self.checkpoint_root = self.spec.checkpoint.path or f"{storage.rstrip('/')}/{job_id}"
        self.checkpoints: list[dict[str, Any]] = []
        self.verify_replicas = verify_replicas
        self.steps: list[StepMetrics] = []
        self.evals: list[EvalMetrics] = []
        self.total_steps: int | None = None
        self.state = "created"
        self.error: str | None = None
        self.error_kind: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.workers: list[Any] = []
        self._group: PlacementGroup | None = None
        self.helpers: list[Any] = []  # reducer / parameter server actors, killed at the end
        self._telemetry: JobTelemetry | None = None
        self._final: dict[str, Any] = {}
        self._setup: Any = None
        self._first_step = 0  # a resumed job's first step

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

    def progress(self) -> dict[str, Any]:
        """State, steps done, total steps, and the error if the job failed."""
        with self._lock:
            return {
                "state": self.state,
                "step": self._first_step + len(self.steps),
                "total_steps": self.total_steps,
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

    def checkpoint_list(self) -> list[dict[str, Any]]:
        """Checkpoints written so far: step, path, size."""
        with self._lock:
            return list(self.checkpoints)

    def result(self) -> dict[str, Any]:
        """Final parameters and memories (numpy), available once the job has succeeded."""
        return self._final

    # ---- the training loop ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._train()
            with self._lock:
                self.state = "stopped" if self._stop.is_set() else "succeeded"
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
        check_resources(spec, ray.cluster_resources())
        setup = prepare(spec)  # validates the spec against the data and builds x_0
        self._setup = setup
        self.total_steps = total = setup.total_steps
        numel = setup.model.numel
        start, initial_params = 0, setup.model.flat.numpy()
        states: list[dict[str, Any]] | None = None
        averager: dict[str, Any] | None = None
        if spec.resume_from is not None:
            resumed = resume_point(spec.resume_from, numel, spec.workers.count)
            start, initial_params = resumed.step, resumed.params.numpy()
            self._first_step = start
            states, averager = resumed.workers, resumed.averager
        initial = ray.put(initial_params)
        self.workers = self._launch_workers(initial, states, averager)
        self._telemetry = JobTelemetry(self.job_id)
        if spec.exchange.mode == "async":
            server = train_async(self, total, numel, initial)
            if not self.stopping():
                self._finish(ray.get(server.params.remote()))
            return
        reduced = spec.exchange.transport == "reduce"
        reducer: Any = None
        if reduced:
            reducer = (
                ray.remote(Reducer)
                .options(name=f"job-{self.job_id}-reducer", namespace=NAMESPACE, num_cpus=0)
                .remote()
            )
            self.helpers.append(reducer)
        every = spec.eval.every
        inputs: list[Any] = []
        checkpoint_every = spec.checkpoint.every
        for step in range(start, total):
            if self.stopping():
                return
            evaluate = step == 0 or bool(every and step % every == 0)
            calls = [
                worker.step.options(num_returns=2).remote(
                    step,
                    *inputs,
                    reduced=reduced,
                    evaluate=evaluate and rank == 0,
                    digest=self.verify_replicas,
                )
                for rank, worker in enumerate(self.workers)
            ]
            updates = [call[0] for call in calls]
            inputs = [reducer.reduce.remote(*updates)] if reduced else updates
            infos = self.gather([call[1] for call in calls], step)
            self._record(step, infos, numel, evaluate)
            done = step + 1
            if checkpoint_every and done % checkpoint_every == 0 and done < total:
                self._apply_pending(done, inputs, reduced, evaluate=False)
                self._checkpoint(done)
                inputs = []
        finals = self._apply_pending(total, inputs, reduced, evaluate=True)
        self.record_eval(EvalMetrics(**finals[0]["eval"]))
        self._finish(self._checkpoint(total))

    def _finish(self, params: Any) -> None:
        """Keep the final parameters and memories, and write the model file."""
        self._final = {
            "params": params,
            "memories": ray.get([w.memory.remote() for w in self.workers]),
        }
        export_model(self.checkpoint_root, self._setup.model, torch.from_numpy(np.array(params)))

    def _apply_pending(
        self, done: int, inputs: list[Any], reduced: bool, *, evaluate: bool
    ) -> list[dict[str, Any]]:
        """Have every worker apply the last step's updates; check the replicas agree."""
        finals = self.gather(
            [
                w.finish.remote(done, *inputs, reduced=reduced, evaluate=evaluate and rank == 0)
                for rank, w in enumerate(self.workers)
            ],
            done,
        )
        self._check_digests(finals, done)
        return finals

    def _checkpoint(self, done: int) -> Any:
        """Write the checkpoint of step boundary ``done`` atomically; returns the params."""
        snapshots = ray.get([w.snapshot.remote() for w in self.workers])
        params = ray.get(self.workers[0].parameters.remote())
        info = save_checkpoint(
            self.checkpoint_root,
            Checkpoint(
                step=done,
                params=torch.from_numpy(np.array(params)),
                workers=[snapshot["state"] for snapshot in snapshots],
                averager=snapshots[0]["averager"],
                spec_json=self.spec.model_dump_json(),
                extra={"job_id": self.job_id},
            ),
        )
        prune_checkpoints(self.checkpoint_root, self.spec.checkpoint.keep)
        with self._lock:
            self.checkpoints.append({"step": info.step, "path": info.path, "nbytes": info.nbytes})
        return params

    def _launch_workers(
        self,
        initial: Any,
        states: list[dict[str, Any]] | None = None,
        averager: dict[str, Any] | None = None,
    ) -> list[Any]:
        spec = self.spec
        bundle = {"CPU": spec.workers.cpus}
        if spec.workers.gpus:
            bundle["GPU"] = spec.workers.gpus
        self._group = placement_group(
            [dict(bundle)] * spec.workers.count, strategy=spec.workers.placement
        )
        try:
            ray.get(self._group.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise SpecError(
                ("workers",),
                f"could not place {spec.workers.count} workers x {bundle} within "
                f"{PLACEMENT_TIMEOUT_S:g}s; the cluster has {ray.available_resources()} free",
            ) from None
        actor = ray.remote(TrainingWorker)
        spec_json = spec.model_dump_json()
        return [
            actor.options(
                name=worker_name(self.job_id, rank),
                namespace=NAMESPACE,
                num_cpus=spec.workers.cpus,
                num_gpus=spec.workers.gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._group, placement_group_bundle_index=rank
                ),
            ).remote(
                spec_json,
                rank,
                spec.workers.count,
                initial,
                states[rank] if states is not None else None,
                averager,
            )
            for rank in range(spec.workers.count)
        ]

    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stop.is_set()

    def gather(self, refs: list[Any], step: int, ranks: list[int] | None = None) -> list[Any]:
        """``ray.get`` each rank's result; a failure names the rank and its error.

        ``ranks`` names the rank behind each reference (default: 0, 1, ...).
        """
        results = []
        for rank, ref in zip(ranks or range(len(refs)), refs, strict=True):
            try:
                results.append(ray.get(ref))
            except RayTaskError as error:
                cause = error.cause if error.cause is not None else error
                if isinstance(cause, TrainingError):
                    raise cause from None
                raise TrainingError(
                    f"worker {rank} failed: {type(cause).__name__}: {cause}", step=step, rank=rank
                ) from None
            except RayActorError:
                raise TrainingError(f"worker {rank} died", step=step, rank=rank) from None
        return results

    def _record(self, step: int, infos: list[dict[str, Any]], numel: int, evaluate: bool) -> None:
        if self.verify_replicas:
            self._check_digests(infos, step)
        ranks: list[RankStats] = [info["stats"] for info in infos]
        metrics = step_metrics(
            step, infos[0]["lr"], ranks, numel, exchange_s=max(r.exchange_s for r in ranks)
        )
        if evaluate:
            self.record_eval(EvalMetrics(**infos[0]["eval"]))
        self.record_step(metrics, ranks, numel)

    def record_step(self, metrics: StepMetrics, ranks: list[RankStats], numel: int) -> None:
        """Keep a step's metrics and export them."""
        with self._lock:
            self.steps.append(metrics)
        if self._telemetry is not None:
            self._telemetry.record_step(ranks, numel)

    def record_eval(self, metrics: EvalMetrics) -> None:
        """Keep an evaluation and export it."""
        with self._lock:
            self.evals.append(metrics)
        if self._telemetry is not None:
            self._telemetry.record_eval(metrics)

    @staticmethod
    def _check_digests(infos: list[dict[str, Any]], step: int) -> None:
        digests = {info["digest"] for info in infos}
        if len(digests) != 1:
            raise TrainingError("replicas diverged: parameters differ across ranks", step=step)

    def _release(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        for helper in self.helpers:
            ray.kill(helper)
        self.workers, self.helpers = [], []
        if self._group is not None:
            remove_placement_group(self._group)
            self._group = None


def resume_point(source: str, numel: int, world: int) -> Checkpoint:
    """Load the checkpoint ``source`` names: a ``.ckpt`` file, or a folder's newest checkpoint
    that loads. Raises ``CheckpointError`` if none fits a model of ``numel`` parameters
    trained by ``world`` workers."""
    if source.endswith(".ckpt"):
        candidates = [source]
    else:
        candidates = [info.path for info in reversed(list_checkpoints(source))]
        if not candidates:
            raise CheckpointError(f"{source}: no complete checkpoint in this folder")
    problems = []
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if checkpoint.params.numel() != numel:
            raise CheckpointError(
                f"{path}: holds {checkpoint.params.numel()} parameters, the model has {numel}"
            )
        if len(checkpoint.workers) != world:
            raise CheckpointError(
                f"{path}: written by {len(checkpoint.workers)} workers, the job has {world}"
            )
        return checkpoint
    raise CheckpointError("; ".join(problems))
