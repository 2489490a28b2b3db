"""The only module of the control plane that touches Ray and the workers.

``RayLauncher`` starts a job's detached supervisor, reads its progress, stops it, and finds
its checkpoints and final model. ``Launcher`` is the protocol the rest of the service codes
against, so routes can be tested with a fake one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec


@dataclass
class JobProgress:
    """What a running supervisor reports; ``state`` is running/resizing/succeeded/failed/
    stopped."""

    state: str
    step: int
    total_steps: int | None
    error: str | None = None
    steps: list[StepMetrics] = field(default_factory=list)
    evals: list[EvalMetrics] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    workers: int | None = None
    first_step: int | None = None
    """The step this supervisor started from (a checkpoint's, after a relaunch); None
    until it knows."""
    error_kind: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    """The supervisor's resize/worker events, all of them, oldest first: ``{seq, kind,
    message}`` with ``seq`` counting from 0 for each supervisor."""


class Launcher(Protocol):
    def start(self) -> str | None:
        """Connect to (or start) the cluster; returns the dashboard URL if there is one."""
        ...

    def ready(self) -> bool: ...

    def submit(self, job_id: str, spec: JobSpec, target: int | None = None) -> None:
        """Start the job's supervisor (training ``target`` workers, default the spec's count);
        does nothing if it already exists."""
        ...

    def relaunch(self, job_id: str, spec: JobSpec, target: int | None = None) -> int | None:
        """Start a new supervisor for a job whose supervisor was lost, from the job's newest
        complete checkpoint; returns that checkpoint's step (None: from the start)."""
        ...

    def scale(self, job_id: str, count: int) -> bool:
        """Tell the job's supervisor to train with ``count`` workers; False when there is no
        supervisor to tell (the target then applies at the next launch)."""
        ...

    def poll(self, job_id: str, since: int) -> JobProgress | None:
        """Progress and the metric records from step ``since`` on; None if the supervisor
        is gone."""
        ...

    def cancel(self, job_id: str) -> None:
        """Stop the job now: its supervisor and workers are killed."""
        ...

    def release(self, job_id: str) -> None:
        """Drop a finished job's supervisor (its results are recorded)."""
        ...

    def checkpoints(self, job_id: str, spec: JobSpec) -> list[dict[str, Any]]: ...

    def model_path(self, job_id: str, spec: JobSpec) -> str | None:
        """The final model file, once written (a local path or a URL)."""
        ...

    def samples_path(self, job_id: str, spec: JobSpec) -> str | None:
        """A sampling job's posterior samples file, once written."""
        ...

    def shutdown(self) -> None: ...


class RayLauncher:
    """Runs jobs on the Ray cluster at ``address`` (None: a local one); with
    ``cluster_autoscales`` their supervisors wait for nodes the cluster does not have yet."""

    def __init__(
        self, address: str | None, storage: str, *, cluster_autoscales: bool = False
    ) -> None:
        self.address = address
        self.storage = storage
        self.cluster_autoscales = cluster_autoscales

    def start(self) -> str | None:
        """Join ``address``; without one, join the local head or start one (``ray start
        --head``, a separate process, so jobs outlive this one)."""
        import ray

        from sparsetrain.workers.supervisor import NAMESPACE

        if ray.is_initialized():
            return None
        address = self.address
        if address is None:
            address = "auto"
            if not _local_head_running():
                _start_local_head()
        context = ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        url = getattr(context, "dashboard_url", None)
        return f"http://{url}" if url else None

    def ready(self) -> bool:
        import ray

        if not ray.is_initialized():
            return False
        try:
            return bool(ray.cluster_resources())
        except Exception:
            return False

    def _actor(self, job_id: str) -> Any:
        import ray

        from sparsetrain.workers.launch import supervisor_name
        from sparsetrain.workers.supervisor import NAMESPACE

        try:
            return ray.get_actor(supervisor_name(job_id), namespace=NAMESPACE)
        except ValueError:
            return None

    def submit(self, job_id: str, spec: JobSpec, target: int | None = None) -> None:
        from sparsetrain.workers.launch import start_job

        if self._actor(job_id) is None:
            start_job(
                spec,
                job_id,
                storage=self.storage,
                target=target,
                cluster_autoscales=self.cluster_autoscales,
            )

    def relaunch(self, job_id: str, spec: JobSpec, target: int | None = None) -> int | None:
        from sparsetrain.workers.checkpoint import list_checkpoints

        self.release(job_id)  # a supervisor that failed, or a name not yet released
        checkpoints = list_checkpoints(self._root(job_id, spec))
        step = None
        if checkpoints and spec.exchange.mode == "sync":
            spec = spec.model_copy(update={"resume_from": self._root(job_id, spec)})
            step = checkpoints[-1].step
        self.submit(job_id, spec, target)
        return step

    def scale(self, job_id: str, count: int) -> bool:
        import ray
        from ray.exceptions import RayActorError

        actor = self._actor(job_id)
        if actor is None:
            return False
        try:
            ray.get(actor.scale.remote(count))
        except RayActorError:
            return False
        return True

    def poll(self, job_id: str, since: int) -> JobProgress | None:
        import ray
        from ray.exceptions import RayActorError

        actor = self._actor(job_id)
        if actor is None:
            return None
        try:
            progress, records, checkpoints, events = ray.get(
                [
                    actor.progress.remote(),
                    actor.metrics.remote(since),
                    actor.checkpoint_list.remote(),
                    actor.event_log.remote(),
                ]
            )
        except RayActorError:
            return None
        return JobProgress(
            state=progress["state"],
            step=progress["step"],
            total_steps=progress["total_steps"],
            error=progress["error"],
            steps=[StepMetrics(**r) for r in records["steps"]],
            evals=[EvalMetrics(**r) for r in records["evals"]],
            checkpoints=checkpoints,
            workers=progress["workers"],
            first_step=progress["first_step"],
            error_kind=progress["error_kind"],
            events=events,
        )

    def cancel(self, job_id: str) -> None:
        self.release(job_id)

    def release(self, job_id: str) -> None:
        import ray

        actor = self._actor(job_id)
        if actor is not None:
            ray.kill(actor)

    def _root(self, job_id: str, spec: JobSpec) -> str:
        return spec.checkpoint.path or f"{self.storage.rstrip('/')}/{job_id}"

    def checkpoints(self, job_id: str, spec: JobSpec) -> list[dict[str, Any]]:
        from sparsetrain.workers.checkpoint import list_checkpoints

        return [
            {"step": c.step, "path": c.path, "nbytes": c.nbytes}
            for c in list_checkpoints(self._root(job_id, spec))
        ]

    def model_path(self, job_id: str, spec: JobSpec) -> str | None:
        from sparsetrain.workers.export import MODEL_FILE

        return self._artifact(job_id, spec, MODEL_FILE)

    def samples_path(self, job_id: str, spec: JobSpec) -> str | None:
        from sparsetrain.workers.export import SAMPLES_FILE

        return self._artifact(job_id, spec, SAMPLES_FILE) if spec.objective == "sample" else None

    def _artifact(self, job_id: str, spec: JobSpec, name: str) -> str | None:
        path = f"{self._root(job_id, spec)}/{name}"
        return path if "://" in path or os.path.exists(path) else None

    def shutdown(self) -> None:
        """Disconnect; the cluster and its jobs keep running."""
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _ray_cli() -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), "ray")
    return candidate if os.path.exists(candidate) else "ray"


def _local_head_running() -> bool:
    result = subprocess.run(
        [_ray_cli(), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    return result.returncode == 0


def _start_local_head() -> None:
    """Start a Ray head on this machine; raises ``RuntimeError`` with Ray's message."""
    result = subprocess.run(
        [_ray_cli(), "start", "--head", "--disable-usage-stats", "--dashboard-host=127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"could not start a local Ray head: {result.stderr.strip()[-500:]}")
