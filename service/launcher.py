"""The only module of the control plane that touches Ray and the workers.

``RayLauncher`` starts a job's detached supervisor, reads its progress, stops it, and finds
its checkpoints and final model. ``Launcher`` is the protocol the rest of the service codes
against, so routes can be tested with a fake one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sparsetrain.jobs import WorkerInfo
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.service import ray_head
from sparsetrain.service.paths import PathRefusedError
from sparsetrain.service.storage import StorageLayout
from sparsetrain.spec import JobSpec
from sparsetrain.supervision import ErrorKind, SupervisorEvent, SupervisorState

log = logging.getLogger("sparsetrain.launcher")

LOG_TAIL_BYTES = 1024 * 1024
"""How much of each log file ``worker_logs`` returns: its end."""


@dataclass
class JobProgress:
    """What a running supervisor reports (read it with ``sparsetrain.supervision.next_action``)."""

    state: SupervisorState
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
    error_kind: ErrorKind | None = None
    events: list[SupervisorEvent] = field(default_factory=list)
    """The supervisor's events, all of them, oldest first (``seq`` counts from 0 for each
    supervisor, ``epoch`` is the launch it was given)."""
    worker_details: list[WorkerInfo] | None = None
    """Each worker: where it runs, its state and last step; None from a supervisor that
    does not report them."""


def _worker_rows(rows: list[dict[str, Any]] | None) -> list[WorkerInfo] | None:
    """A supervisor's worker rows as ``WorkerInfo``; None when it sent none."""
    return None if rows is None else [WorkerInfo.model_validate(row) for row in rows]


class LaunchError(RuntimeError):
    """A job could not be started; the message names paths relative to the user's roots."""


class Launcher(Protocol):
    def start(self) -> str | None:
        """Connect to (or start) the cluster; returns the dashboard URL if there is one."""
        ...

    def ready(self) -> bool: ...

    def submit(self, job_id: str, spec: JobSpec, target: int | None = None) -> None:
        """Start the job's first supervisor (training ``target`` workers, default the spec's
        count); does nothing if it already exists."""
        ...

    def relaunch(
        self, job_id: str, spec: JobSpec, target: int | None = None, epoch: int = 0
    ) -> int | None:
        """Start a new supervisor for a job whose supervisor was lost, from the job's newest
        checkpoint that loads (the supervisor reports which it used and which it skipped);
        returns the newest checkpoint's step on storage (None: from the start). ``epoch``
        numbers the launch (the job's restart count): its events carry it."""
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

    def checkpoints(self, job_id: str, spec: JobSpec) -> list[dict[str, Any]]:
        """The job's complete checkpoints, oldest first: ``{step, path, nbytes}`` with
        ``path`` relative to its principal's storage namespace."""
        ...

    def model_path(self, job_id: str, spec: JobSpec) -> str | None:
        """The final model file, once written (a local path or a URL)."""
        ...

    def samples_path(self, job_id: str, spec: JobSpec) -> str | None:
        """A sampling job's posterior samples file, once written."""
        ...

    def delete_artifacts(self, job_id: str, spec: JobSpec) -> None:
        """Delete an ended job's files: its checkpoints, model and samples files, its logs
        and its TensorBoard export."""
        ...

    def worker_logs(self, job_id: str) -> list[tuple[str, str]]:
        """The job's log files as (name, text): the supervisor's, then each worker's
        (output and tracebacks), the tail of each, with paths relative to the principal's
        roots; ``[]`` when there are none."""
        ...

    def shutdown(self) -> None: ...


class RayLauncher:
    """Runs jobs on the Ray cluster at ``address`` (None: a local one); with
    ``cluster_autoscales`` their supervisors wait for nodes the cluster does not have yet.

    Each job's files live where ``layout`` puts them for the principal ``owner_of(job_id)``
    names; the workers get the absolute paths, clients only paths relative to the roots.
    """

    def __init__(
        self,
        address: str | None,
        layout: StorageLayout,
        *,
        owner_of: Callable[[str], str],
        cluster_autoscales: bool = False,
        head_data_dir: Path | None = None,
        head_host: str = "127.0.0.1",
    ) -> None:
        """Without ``address``, jobs run on the Ray head that ``head_data_dir`` owns (see
        ``ray_head``), its node bound to ``head_host``."""
        self.address = address
        self.head_data_dir = head_data_dir
        self.head_host = head_host
        self.layout = layout
        self.owner_of = owner_of
        self._owners: dict[str, str] = {}  # a job's owner never changes
        self.cluster_autoscales = cluster_autoscales

    def start(self) -> str | None:
        """Join ``address``; without one, find the head ``head_data_dir`` owns or start it
        (``ray start --head`` in a session of its own, so jobs outlive this process), and
        join it with its token: sets ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN_PATH`` in this
        process's environment. Never joins a head this data dir did not start."""
        import ray
        from ray._raylet import Config  # type: ignore[attr-defined]

        from sparsetrain.workers.runtime.names import NAMESPACE

        if ray.is_initialized():
            return None
        address = self.address
        if address is None:
            address = self._own_head()
            Config.initialize("")  # Ray read RAY_AUTH_MODE at import: make it read it again
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

        from sparsetrain.workers.runtime.names import NAMESPACE, supervisor_name

        try:
            return ray.get_actor(supervisor_name(job_id), namespace=NAMESPACE)
        except ValueError:
            return None

    def submit(self, job_id: str, spec: JobSpec, target: int | None = None) -> None:
        self._start(job_id, spec, target, epoch=0)

    def _start(self, job_id: str, spec: JobSpec, target: int | None, epoch: int) -> None:
        """Start supervisor launch ``epoch`` of the job unless one is running."""
        from sparsetrain.workers.runtime.launch import start_job

        if self._actor(job_id) is None:
            owner = self._owner(job_id)
            try:
                start_job(
                    self.layout.launch_spec(spec, owner, job_id),
                    job_id,
                    storage=self.layout.namespace(owner),
                    target=target,
                    cluster_autoscales=self.cluster_autoscales,
                    epoch=epoch,
                )
            except Exception as error:  # its message reaches the client as the job's error
                raise LaunchError(self.layout.redact(str(error), owner)) from error

    def relaunch(
        self, job_id: str, spec: JobSpec, target: int | None = None, epoch: int = 0
    ) -> int | None:
        from sparsetrain.workers.training.checkpoint import list_checkpoints

        self.release(job_id)  # a supervisor that failed, or a name not yet released
        root = self._root(job_id, spec)
        checkpoints = list_checkpoints(root)
        step = None
        if checkpoints and spec.exchange.mode == "sync":
            spec = spec.model_copy(update={"resume_from": root})
            step = checkpoints[-1].step
        self._start(job_id, spec, target, epoch)
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
        owner = self._owner(job_id)
        for checkpoint in checkpoints:
            checkpoint["path"] = self.layout.public(checkpoint["path"], owner)
        error = progress["error"]
        return JobProgress(
            state=SupervisorState(progress["state"]),
            step=progress["step"],
            total_steps=progress["total_steps"],
            error=None if error is None else self.layout.redact(error, owner),
            steps=[StepMetrics(**r) for r in records["steps"]],
            evals=[EvalMetrics(**r) for r in records["evals"]],
            checkpoints=checkpoints,
            workers=progress["workers"],
            first_step=progress["first_step"],
            error_kind=ErrorKind.read(progress["error_kind"]),
            events=[SupervisorEvent.model_validate(event) for event in events],
            worker_details=_worker_rows(progress.get("worker_details")),
        )

    def cancel(self, job_id: str) -> None:
        self.release(job_id)

    def release(self, job_id: str) -> None:
        import ray

        actor = self._actor(job_id)
        if actor is not None:
            ray.kill(actor)

    def _owner(self, job_id: str) -> str:
        if job_id not in self._owners:
            self._owners[job_id] = self.owner_of(job_id)
        return self._owners[job_id]

    def _root(self, job_id: str, spec: JobSpec) -> str:
        """The folder the job writes its checkpoints, model and samples to (a stored spec
        from before per-principal storage may name another: its job folder then)."""
        owner = self._owner(job_id)
        try:
            return self.layout.checkpoint_root(owner, job_id, spec)
        except PathRefusedError:
            return self.layout.job_folder(owner, job_id)

    def checkpoints(self, job_id: str, spec: JobSpec) -> list[dict[str, Any]]:
        from sparsetrain.workers.training.checkpoint import list_checkpoints

        owner = self._owner(job_id)
        return [
            {"step": c.step, "path": self.layout.public(c.path, owner), "nbytes": c.nbytes}
            for c in list_checkpoints(self._root(job_id, spec))
        ]

    def model_path(self, job_id: str, spec: JobSpec) -> str | None:
        from sparsetrain.workers.training.export import MODEL_FILE

        return self._artifact(job_id, spec, MODEL_FILE)

    def samples_path(self, job_id: str, spec: JobSpec) -> str | None:
        from sparsetrain.workers.training.export import SAMPLES_FILE

        return self._artifact(job_id, spec, SAMPLES_FILE) if spec.objective == "sample" else None

    def _artifact(self, job_id: str, spec: JobSpec, name: str) -> str | None:
        path = f"{self._root(job_id, spec)}/{name}"
        return path if "://" in path or os.path.exists(path) else None

    def delete_artifacts(self, job_id: str, spec: JobSpec) -> None:
        from sparsetrain.workers.runtime.tensorboard_export import delete_tensorboard
        from sparsetrain.workers.runtime.worker_log import delete_logs
        from sparsetrain.workers.training.artifacts import delete_job_files

        folder = self.layout.job_folder(self._owner(job_id), job_id)
        delete_logs(folder)
        delete_tensorboard(folder)
        delete_job_files(self._root(job_id, spec))

    def worker_logs(self, job_id: str) -> list[tuple[str, str]]:
        from sparsetrain.workers.runtime.worker_log import read_logs

        owner = self._owner(job_id)
        logs = read_logs(self.layout.job_folder(owner, job_id), LOG_TAIL_BYTES)
        return [(name, self.layout.redact(text, owner)) for name, text in logs]

    def _own_head(self) -> str:
        """The GCS address of the data dir's head, started if needed; its auth settings go
        into this process's environment."""
        if self.head_data_dir is None:
            raise ValueError("without a Ray address the launcher needs the head's data dir")
        head, started = ray_head.ensure(self.head_data_dir, self.head_host)
        os.environ.pop("RAY_AUTH_TOKEN", None)  # it would override the head's token file
        os.environ.update(head.auth_env())
        log.info(
            "%s the local Ray head at %s (temp dir %s)",
            "started" if started else "found",
            head.address,
            head.temp_dir,
        )
        return head.address

    def shutdown(self) -> None:
        """Disconnect; the cluster and its jobs keep running (an in-process cluster, address
        ``local``, stops with it)."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.address == "local":
            log.info("disconnected from Ray; its in-process cluster stopped")
        else:
            log.info("disconnected from Ray; the cluster and its jobs keep running")
